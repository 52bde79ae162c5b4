package proxy_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// Identities used across the tests.
const (
	proxyID   = "spiffe://example.org/ns/prod/proxy"
	webID     = "spiffe://example.org/ns/prod/web"     // allowed exactly
	stagingID = "spiffe://example.org/ns/staging/api"  // allowed by ns/staging/*
	teamID    = "spiffe://example.org/team/a/b/c"      // allowed by team/**
	dbID      = "spiffe://example.org/ns/prod/db"      // denied
	deepID    = "spiffe://example.org/ns/staging/a/b"  // denied: * is one segment
	teamRoot  = "spiffe://example.org/team"            // denied: ** needs a segment
	foreignID = "spiffe://other.org/ns/prod/web"       // another trust domain
	auditorID = "spiffe://example.org/audit/reporter"  // allowed by role only
	adminID   = "spiffe://example.org/ns/prod/admin"   // used for spoofing
	outID     = "spiffe://example.org/ns/prod/web-out" // the outbound proxy
)

// allowPatterns is the --allow list of most tests. other.org is listed on
// purpose: a foreign client must be refused by trust, not by policy.
var allowPatterns = []string{
	webID,
	"spiffe://example.org/ns/staging/*",
	"spiffe://example.org/team/**",
	"spiffe://other.org/**",
}

// world is a CA with the proxy's identity directory and source.
type world struct {
	ca     *testca.CA
	dir    string // the proxy's identity directory
	src    *identity.DirSource
	policy proxy.PolicySource
}

func newWorld(t testing.TB) *world {
	t.Helper()
	ca := testca.New(t)
	dir := filepath.Join(t.TempDir(), "proxy")
	if err := ca.Leaf(t, proxyID, testca.IP("127.0.0.1"), testca.DNS("localhost")).Save(dir); err != nil {
		t.Fatal(err)
	}
	src, err := identity.NewDirSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := authz.FromPatterns(allowPatterns)
	if err != nil {
		t.Fatal(err)
	}
	return &world{ca: ca, dir: dir, src: src, policy: proxy.StaticPolicy{P: pol}}
}

// bundleWith is the bundle set of w's CA and each partner CA, as a proxy
// that federates with them trusts.
func (w *world) bundleWith(partners ...*testca.CA) *x509bundle.Set {
	set := x509bundle.NewSet(x509bundle.FromX509Authorities(w.ca.TrustDomain, []*x509.Certificate{w.ca.Root}))
	for _, p := range partners {
		set.Add(x509bundle.FromX509Authorities(p.TrustDomain, []*x509.Certificate{p.Root}))
	}
	return set
}

func (w *world) roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(w.ca.Root)
	return p
}

// clientTLS is a client configuration that trusts w's root and presents id
// (none when id is nil).
func (w *world) clientTLS(id *identity.Identity, protos ...string) *tls.Config {
	cfg := &tls.Config{RootCAs: w.roots(), NextProtos: protos}
	if id != nil {
		cfg.Certificates = []tls.Certificate{id.TLSCertificate()}
	}
	return cfg
}

// rolesExtension encodes the roles extension as identity.RolesOID
// documents it (a SEQUENCE OF UTF8String). It does not use
// identity.RolesExtension, which fails (see TestRolesExtension), so that
// the proxy's use of roles is tested regardless.
func rolesExtension(t testing.TB, roles []string) pkix.Extension {
	t.Helper()
	raws := make([]asn1.RawValue, len(roles))
	for i, r := range roles {
		raws[i] = asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagUTF8String, Bytes: []byte(r)}
	}
	v, err := asn1.Marshal(raws)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: identity.RolesOID, Value: v}
}

// leafWithRoles issues id with the roles extension.
func leafWithRoles(t testing.TB, ca *testca.CA, id string, roles ...string) *identity.Identity {
	t.Helper()
	idn := ca.Leaf(t, id, testca.Extension(rolesExtension(t, roles)))
	if got := identity.Roles(idn.Leaf()); strings.Join(got, ",") != strings.Join(roles, ",") {
		t.Fatalf("issued roles %v, want %v", got, roles)
	}
	return idn
}

// proxyRun is a running inbound proxy.
type proxyRun struct {
	p       *proxy.Inbound
	addr    string
	cancel  context.CancelFunc
	done    chan error
	reg     *prometheus.Registry
	mig     *proxy.MigrationReport
	logs    *testlog.Buffer
	stopped bool
}

// runInbound runs an inbound proxy on 127.0.0.1 with cfg (filling in
// defaults: w's sources and policy, metrics, a migration report, a log),
// and stops it at the end of the test.
func runInbound(t testing.TB, w *world, cfg proxy.InboundConfig) *proxyRun {
	t.Helper()
	return runInboundOn(t, w, cfg, testnet.Listen(t), nil)
}

// runInboundOn is runInbound on the listener ln, with prep (if not nil)
// run on the proxy before Serve starts.
func runInboundOn(t testing.TB, w *world, cfg proxy.InboundConfig, ln net.Listener, prep func(*proxy.Inbound)) *proxyRun {
	t.Helper()
	if cfg.SVID == nil {
		cfg.SVID, cfg.Bundle = w.src, w.src
	}
	if cfg.Policy == nil {
		cfg.Policy = w.policy
	}
	r := &proxyRun{reg: prometheus.NewRegistry(), logs: &testlog.Buffer{}, done: make(chan error, 1)}
	if cfg.Metrics == nil {
		cfg.Metrics = proxy.NewMetrics(r.reg, "inbound")
	}
	if cfg.Migration == nil {
		cfg.Migration = proxy.NewMigrationReport()
	}
	r.mig = cfg.Migration
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewJSONHandler(r.logs, nil))
	}
	if cfg.Limits.DrainTimeout == 0 {
		cfg.Limits.DrainTimeout = 2 * time.Second
	}
	p, err := proxy.NewInbound(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if prep != nil {
		prep(p)
	}
	r.p, r.addr = p, ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- p.Serve(ctx, ln) }()
	t.Cleanup(func() {
		if !r.stopped {
			if err := r.stop(t); err != nil && !errors.Is(err, net.ErrClosed) {
				t.Errorf("Serve: %v", err)
			}
		}
	})
	return r
}

// stop cancels the proxy's context and waits for Serve to return.
func (r *proxyRun) stop(t testing.TB) error {
	t.Helper()
	r.stopped = true
	r.cancel()
	select {
	case err := <-r.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return 30s after its context was cancelled")
		return nil
	}
}

// beginStop cancels the proxy's context and waits until its listener
// refuses connections, without waiting for Serve to return.
func (r *proxyRun) beginStop(t testing.TB) {
	t.Helper()
	r.stopped = true
	r.cancel()
	testwait.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", r.addr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	}, "the proxy's listener to close")
}

// stillServing fails t if Serve has returned.
func (r *proxyRun) stillServing(t testing.TB, when string) {
	t.Helper()
	select {
	case err := <-r.done:
		t.Fatalf("Serve returned (%v) %s", err, when)
	default:
	}
}

// returned waits for Serve to return after beginStop and checks that it
// returned no error.
func (r *proxyRun) returned(t testing.TB, when string) {
	t.Helper()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Serve = %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return " + when)
	}
}

// collectBackend reads until EOF, then sends everything back and closes:
// it only answers once the client has half-closed.
func collectBackend(t testing.TB) string {
	return testnet.Serve(t, func(c net.Conn) {
		b, err := io.ReadAll(c)
		if err != nil {
			return
		}
		c.Write(b)
	})
}

// seen is what the HTTP backend reports about the request it got.
type seen struct {
	Method string   `json:"method"`
	Path   string   `json:"path"`
	Proto  string   `json:"proto"`
	XFCC   []string `json:"xfcc"`
	Header http.Header
}

// httpBackend answers every request with a JSON seen.
func httpBackend(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(seen{Method: r.Method, Path: r.URL.Path, Proto: r.Proto, XFCC: r.Header.Values(proxy.XFCCHeader), Header: r.Header})
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// backendFor is a backend for protocol: an echo service for tcp, the JSON
// HTTP backend for http.
func backendFor(t testing.TB, protocol proxy.Protocol) string {
	if protocol == proxy.HTTP {
		return httpBackend(t)
	}
	return testnet.Echo(t)
}

// httpClient talks to the proxy over TLS with cfg, HTTP/2 when the server
// agrees.
func httpClient(t testing.TB, cfg *tls.Config) *http.Client {
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// result is the outcome of one HTTP request.
type result struct {
	code int
	body string
	seen seen
	resp *http.Response
	err  error
}

func doRequest(c *http.Client, method, url string, hdr http.Header) result {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return result{err: err}
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	r := result{code: resp.StatusCode, body: string(b), resp: resp, err: err}
	if resp.StatusCode == http.StatusOK {
		json.Unmarshal(b, &r.seen)
	}
	return r
}

// metric returns the value of the counter or gauge name with labels, 0
// when absent.
func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

func mustID(t testing.TB, s string) spiffeid.ID {
	t.Helper()
	id, err := spiffeid.FromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func slogJSON(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }

// commonPrefix is the length of the longest common prefix of a and b.
func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// getOnce makes one GET on a fresh connection and closes it.
func getOnce(cfg *tls.Config, url string) result {
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	return doRequest(&http.Client{Transport: tr, Timeout: 10 * time.Second}, "GET", url, nil)
}
