// Package spire_test proves federation with a peer nobody here wrote: a
// real SPIRE server (built from the tools module, never committed)
// federates with mutual both ways, in both bundle endpoint profiles; a
// workload holding a SPIRE-issued X509-SVID reaches a service behind
// mutual's inbound proxy by a rule naming its foreign ID (and only then); a
// mutual workload reaches a service holding a SPIRE SVID through mutual's
// outbound proxy, which verifies it against the bundle fetched from SPIRE.
package spire_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	gotls "github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/agent"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/cli"
	mfed "github.com/mutual-tls/mutual/internal/federation"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/sidecar"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testport"
	"github.com/mutual-tls/mutual/internal/testwait"
)

const (
	mutualTD = "mutual.test"
	// webID is the mutual workload: the inbound proxy's identity, and the
	// caller behind the outbound proxy.
	webID = "spiffe://mutual.test/ns/web"
	// spireClientID and spireServiceID are SVIDs minted by SPIRE.
	spireClientID  = "spiffe://spire.test/workload/client"
	spireServiceID = "spiffe://spire.test/billing/api"
	spireEndpoint  = "spiffe://spire.test/spire/server"
)

var spireTD = spiffeid.RequireTrustDomainFromString("spire.test")

// TestSPIREFederatesBothWays runs the whole exchange once per bundle
// endpoint profile, used both ways: SPIRE fetches mutual's bundle, mutual
// fetches SPIRE's, and workloads of each domain reach the other's through
// mutual's proxies.
func TestSPIREFederatesBothWays(t *testing.T) {
	spireServerBinary(t) // first: skips (or fails under CI) when SPIRE cannot be built
	for _, profile := range []string{mfed.ProfileSPIFFE, mfed.ProfileWeb} {
		t.Run(profile, func(t *testing.T) {
			w := federate(t, profile)
			t.Run("SPIRE workload to mutual inbound proxy", w.spireToMutual)
			t.Run("mutual workload to SPIRE service through the outbound proxy", w.mutualToSPIRE)
		})
	}
}

// world is a mutual CA and a SPIRE server federated with each other, and
// a mutual agent whose Workload API hands out webID with SPIRE's bundle.
type world struct {
	e     *testenv.CA
	spire *spireServer
	sock  string // the mutual agent's Workload API socket
	// spireView is what SPIRE's workloads trust: SPIRE's own bundle and
	// mutual's, as the SPIRE server fetched it.
	spireView *x509bundle.Set
}

func federate(t *testing.T, profile string) *world {
	t.Helper()
	ctx := context.Background()
	e := testenv.StartCA(t, testenv.Options{CA: testca.New(t, testca.WithTrustDomain(mutualTD))})
	dir := t.TempDir()
	mutualRoot := writeFile(t, dir, "mutual-root.pem", pki.EncodeCertificates(e.Root))
	o := spireOptions{Profile: profile, MutualURL: e.URL + mfed.EndpointPath, MutualTD: mutualTD, WebRoots: mutualRoot}
	var webRoot *x509.Certificate
	if profile == mfed.ProfileWeb {
		// SPIRE's https_web endpoint serves a certificate of a web CA
		// for 127.0.0.1.
		web := testca.New(t, testca.WithTrustDomain("web.test"))
		id := web.Leaf(t, "spiffe://web.test/spire/bundle-endpoint", testca.IP("127.0.0.1"))
		key, err := x509.MarshalPKCS8PrivateKey(id.Key)
		if err != nil {
			t.Fatal(err)
		}
		o.ServingCert = writeFile(t, dir, "endpoint.pem", pki.EncodeCertificates(id.Chain...))
		o.ServingKey = writeFile(t, dir, "endpoint-key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}))
		webRoot = web.Root
	}
	s := startSPIRE(t, o)
	w := &world{e: e, spire: s}

	// SPIRE federates with mutual: with https_spiffe it needs mutual's
	// bundle once, out of band (as PEM: no refresh hint, no JWT keys, so
	// that holding them proves the fetch).
	if profile == mfed.ProfileSPIFFE {
		s.mustCLI(t, "bundle", "set", "-id", "spiffe://"+mutualTD, "-path", mutualRoot)
	}
	var mutualAtSPIRE *spiffebundle.Bundle
	testwait.EventuallyNil(t, func() error {
		// Ask for a fetch at once instead of waiting for SPIRE's retry.
		if _, err := s.cli("federation", "refresh", "-id", "spiffe://"+mutualTD); err != nil {
			return err
		}
		out, err := s.cli("bundle", "list", "-id", "spiffe://"+mutualTD, "-format", "spiffe")
		if err != nil {
			return err
		}
		b, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(mutualTD), []byte(out))
		if err != nil {
			return fmt.Errorf("SPIRE's bundle for %s: %w\n%s", mutualTD, err, out)
		}
		// SPIRE's CLI prints no sequence; the refresh hint and the
		// JWT keys come with a fetch only.
		if _, ok := b.RefreshHint(); !ok {
			return fmt.Errorf("SPIRE holds %s's bundle without a refresh hint: not fetched yet\n%s", mutualTD, out)
		}
		mutualAtSPIRE = b
		return nil
	}, "SPIRE to fetch mutual's bundle")
	if auths := mutualAtSPIRE.X509Authorities(); len(auths) != 1 || !auths[0].Equal(e.Root) {
		t.Fatalf("SPIRE fetched %d authorities for %s, want mutual's root", len(auths), mutualTD)
	}
	if hint, _ := mutualAtSPIRE.RefreshHint(); hint != mfed.DefaultRefreshHint {
		t.Errorf("SPIRE holds mutual's bundle with refresh hint %v, want mutual's %v", hint, mfed.DefaultRefreshHint)
	}
	if len(mutualAtSPIRE.JWTAuthorities()) == 0 {
		t.Error("SPIRE holds no JWT authority of mutual's: the fetched bundle lost them")
	}

	// Mutual federates with SPIRE, with the command an operator types.
	spireBundle, err := spiffebundle.Parse(spireTD, []byte(s.mustCLI(t, "bundle", "show", "-format", "spiffe")))
	if err != nil {
		t.Fatalf("SPIRE's own bundle: %v", err)
	}
	args := []string{"federation", "add", "--identity-dir", e.CA.AdminDir, "--trust-domain", spireTD.Name(),
		"--endpoint-url", s.EndpointURL, "--profile", profile}
	if profile == mfed.ProfileSPIFFE {
		raw, err := spireBundle.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		args = append(args, "--endpoint-id", spireEndpoint, "--bundle", writeFile(t, dir, "spire-bundle.json", raw))
	} else {
		args = append(args, "--web-roots", writeFile(t, dir, "web-root.pem", pki.EncodeCertificates(webRoot)))
	}
	mutual(t, args...)
	var want []string
	for _, a := range spireBundle.X509Authorities() {
		want = append(want, mfed.Fingerprint(a))
	}
	testwait.EventuallyNil(t, func() error {
		l, err := e.Admin.ListFederations(ctx)
		if err != nil {
			return err
		}
		if len(l.Federations) != 1 || l.Federations[0].LastAttempt == nil {
			return fmt.Errorf("relationships %+v: no fetch yet", l.Federations)
		}
		f := l.Federations[0]
		if f.LastError != "" {
			return fmt.Errorf("fetch from SPIRE: %s", f.LastError)
		}
		// The X.509 authorities are listed by fingerprint (JWT keys, where
		// listed, as "jwt:KID:...").
		var x509Keys []string
		for _, k := range f.Keys {
			if !strings.HasPrefix(k, "jwt:") {
				x509Keys = append(x509Keys, k)
			}
		}
		if fmt.Sprint(x509Keys) != fmt.Sprint(want) {
			return fmt.Errorf("mutual holds keys %v for spire.test, want SPIRE's X.509 authorities %v", f.Keys, want)
		}
		return nil
	}, "mutual to fetch SPIRE's bundle")

	w.spireView = x509bundle.NewSet(x509bundle.FromX509Authorities(spireTD, spireBundle.X509Authorities()),
		x509bundle.FromX509Authorities(mutualAtSPIRE.TrustDomain(), mutualAtSPIRE.X509Authorities()))
	w.sock = w.runAgent(t)
	return w
}

// runAgent enrolls a node and runs mutual's agent with an entry giving
// this process webID; it returns the Workload API socket once that hands
// out SPIRE's bundle beside the SVID.
func (w *world) runAgent(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	const node = "spiffe://mutual.test/node/n1"
	if _, err := w.e.Admin.CreateEntry(ctx, api.EntryRequest{SPIFFEID: webID, Nodes: []string{node}, Selectors: []string{fmt.Sprintf("unix:uid:%d", os.Getuid())}}); err != nil {
		t.Fatalf("entry for %s: %v", webID, err)
	}
	base, err := os.MkdirTemp("", "ag") // a short socket path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	log, _ := testlog.New(t, "agent")
	cfg := agent.Config{StateDir: filepath.Join(base, "state"), Token: w.e.Token(t, node, api.TokenRequest{}),
		Socket: filepath.Join(base, "agent.sock"), SyncInterval: time.Second, Log: log}
	nctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	a, err := agent.New(nctx, cfg)
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("agent Run: %v", err)
		}
		a.Close()
	})
	addr := workloadapi.WithAddr("unix://" + cfg.Socket)
	testwait.EventuallyNil(t, func() error {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		res, err := workloadapi.FetchX509Context(c, addr)
		if err != nil {
			return err
		}
		if b, ok := res.Bundles.Get(spireTD); !ok || len(b.X509Authorities()) == 0 {
			return fmt.Errorf("the Workload API hands out no spire.test bundle yet")
		}
		return nil
	}, "the agent's Workload API to hand out SPIRE's bundle")
	return "unix://" + cfg.Socket
}

// mint has SPIRE mint an X509-SVID for id.
func (w *world) mint(t *testing.T, id string) *x509svid.SVID {
	t.Helper()
	dir := t.TempDir()
	w.spire.mustCLI(t, "x509", "mint", "-spiffeID", id, "-ttl", "1h", "-write", dir)
	svid, err := x509svid.Load(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatalf("SPIRE's SVID for %s: %v", id, err)
	}
	return svid
}

// proxy runs a mutual sidecar proxy fed by the agent's Workload API and
// returns its address once it is ready (/readyz: it holds its certificate
// and knows the revocation status), so that a refusal is the proxy's
// judgement, not its start.
func (w *world) proxy(t *testing.T, in *sidecar.Inbound, out *sidecar.Outbound) string {
	t.Helper()
	log, logs := testlog.NewJSON(t, "proxy")
	cfg := sidecar.Config{
		Source: sidecar.Source{WorkloadAPI: w.sock}, Revocation: sidecar.Revocation{CAURLs: []string{w.e.URL}},
		Listen: testport.Addr(t), Metrics: "127.0.0.1:0", Log: log, Inbound: in, Outbound: out,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sidecar.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy Run: %v", err)
		}
	})
	testwait.EventuallyNil(t, func() error {
		select {
		case err := <-done:
			t.Fatalf("the proxy stopped before it was ready: %v", err)
		default:
		}
		metrics := ""
		for _, r := range logs.Records() {
			if r["msg"] == "proxy listening" {
				metrics, _ = r["metrics"].(string)
			}
		}
		if metrics == "" {
			return errors.New("not listening yet")
		}
		res, err := http.Get(strings.TrimSuffix(metrics, "/metrics") + "/readyz")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %d %s", res.StatusCode, body)
		}
		return nil
	}, "the proxy to be ready")
	return cfg.Listen
}

// spireToMutual: a workload holding a SPIRE SVID calls a service behind
// mutual's inbound proxy, verifying the proxy by mutual's bundle as SPIRE
// fetched it. A rule naming its foreign ID lets it in, and the service
// learns that ID; a rule for mutual's own domain only does not; a
// certificate for the same ID from a CA other than SPIRE's is refused
// even by the rule.
func (w *world) spireToMutual(t *testing.T) {
	reached := make(chan string, 16)
	backend := httpBackend(t, reached)
	allowed := w.proxy(t, &sidecar.Inbound{Target: backend, Allow: patterns(t, "spiffe://spire.test/workload/*"), Mode: proxy.Strict, Protocol: proxy.HTTP}, nil)
	local := w.proxy(t, &sidecar.Inbound{Target: backend, Allow: patterns(t, "spiffe://mutual.test/**"), Mode: proxy.Strict, Protocol: proxy.HTTP}, nil)

	client := w.mint(t, spireClientID)
	get := func(addr string, svid x509svid.Source) (int, string, error) {
		cfg := gotls.MTLSClientConfig(svid, w.spireView, gotls.AuthorizeID(spiffeid.RequireFromString(webID)))
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
		defer c.CloseIdleConnections()
		res, err := c.Get("https://" + addr + "/invoices")
		if err != nil {
			return 0, "", err
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		return res.StatusCode, string(body), err
	}
	code, body, err := get(allowed, client)
	if err != nil || code != http.StatusOK || !strings.Contains(body, "URI="+spireClientID) {
		t.Fatalf("SPIRE workload through the proxy allowing spire.test/workload/*: %d %q %v; want 200 naming %s", code, body, err, spireClientID)
	}
	<-reached
	if code, body, err := get(local, client); err == nil && code == http.StatusOK {
		t.Errorf("SPIRE workload admitted by a proxy allowing only spiffe://mutual.test/**: %d %q", code, body)
	}
	impostor := testca.New(t, testca.WithTrustDomain("spire.test")).Leaf(t, spireClientID)
	if code, body, err := get(allowed, svidOf(impostor)); err == nil && code == http.StatusOK {
		t.Errorf("a %s certificate from a CA other than SPIRE's was admitted: %d %q", spireClientID, code, body)
	}
	select {
	case xfcc := <-reached:
		t.Errorf("the service was reached by a refused caller (%s)", xfcc)
	default:
	}
}

// mutualToSPIRE: a plaintext client of mutual's outbound proxy reaches a
// service holding a SPIRE SVID, which sees the caller as webID (verified
// by mutual's bundle as SPIRE fetched it). The outbound proxy verifies the
// service by SPIRE's bundle, as mutual fetched it: a service holding a
// certificate for the same ID from another CA is refused.
func (w *world) mutualToSPIRE(t *testing.T) {
	serve := func(svid x509svid.Source) string {
		cfg := gotls.MTLSServerConfig(svid, w.spireView, gotls.AuthorizeID(spiffeid.RequireFromString(webID)))
		return testnet.ServeTLS(t, cfg, func(c *tls.Conn) {
			id, err := x509svid.IDFromCert(c.ConnectionState().PeerCertificates[0])
			if err != nil {
				return
			}
			io.WriteString(c, "hello "+id.String())
		})
	}
	expect := []authz.Pattern{pattern(t, spireServiceID)}
	through := w.proxy(t, nil, &sidecar.Outbound{Target: serve(w.mint(t, spireServiceID)), Expect: expect})
	if got, err := readAll(through); err != nil || got != "hello "+webID {
		t.Fatalf("through the outbound proxy to the SPIRE service: %q, %v; want %q", got, err, "hello "+webID)
	}
	impostor := testca.New(t, testca.WithTrustDomain("spire.test")).Leaf(t, spireServiceID)
	toImpostor := w.proxy(t, nil, &sidecar.Outbound{Target: serve(svidOf(impostor)), Expect: expect})
	if got, err := readAll(toImpostor); got != "" {
		t.Errorf("the outbound proxy reached a %s not issued by SPIRE: %q, %v", spireServiceID, got, err)
	}
}

// httpBackend is a plaintext service answering with the caller the proxy
// named (the identity header), also sent on reached.
func httpBackend(t *testing.T, reached chan<- string) string {
	t.Helper()
	ln := testnet.Listen(t)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		xfcc := r.Header.Get(proxy.XFCCHeader)
		select {
		case reached <- xfcc:
		default:
		}
		io.WriteString(rw, xfcc)
	})}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

// readAll connects to addr in plain TCP and reads until the other side
// closes.
func readAll(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

func patterns(t *testing.T, ps ...string) *authz.Policy {
	t.Helper()
	p, err := authz.FromPatterns(ps)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func pattern(t *testing.T, s string) authz.Pattern {
	t.Helper()
	p, err := authz.ParsePattern(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// mutual runs the mutual command line in this process and fails the test
// when it fails.
func mutual(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := cli.Main(args, strings.NewReader(""), &stdout, &stderr); code != 0 {
		t.Fatalf("mutual %s: exit %d: %s", strings.Join(args, " "), code, stderr.String())
	}
	return stdout.String()
}

// svidOf is id as go-spiffe holds an X509-SVID.
func svidOf(id *identity.Identity) *x509svid.SVID {
	return &x509svid.SVID{ID: id.ID, Certificates: id.Chain, PrivateKey: id.Key}
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
