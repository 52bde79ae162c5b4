package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// outcome is what a client sees.
type outcome int

const (
	forwarded outcome = iota // reaches the service
	refused                  // the handshake (or the first read) fails
	denied                   // tcp: refused as not authorized; http: 403
)

func (o outcome) String() string { return [...]string{"forwarded", "refused", "denied"}[o] }

// peer is a client of the authorization table.
type peer struct {
	name      string
	id        *identity.Identity // nil: no certificate
	plaintext bool               // no TLS at all
	strict    outcome
	perm      outcome
	// reason is the refusal label in logs and metrics (when refused/denied
	// at the handshake); strictReason overrides it in strict mode.
	reason, strictReason string
	// migration is the kind recorded in permissive mode.
	migration string
}

// peers builds the table. The trust graph:
//
//	example.org root ─ intermediate ─┬─ proxy, web, staging, team, db, ... (good)
//	                                 ├─ expired, not yet valid, server-only (defects)
//	other.org root ─ intermediate ─── other.org/ns/prod/web (foreign trust domain)
//	example.org root' ─ intermediate' ─ example.org/ns/prod/web (impostor CA)
func peers(t *testing.T, w *world) []peer {
	foreign := testca.New(t, testca.WithTrustDomain("other.org"))
	impostor := testca.New(t) // same trust domain, unknown root
	ca := w.ca
	return []peer{
		{name: "allowed exact ID", id: ca.Leaf(t, webID)},
		{name: "allowed by *", id: ca.Leaf(t, stagingID)},
		{name: "allowed by **", id: ca.Leaf(t, teamID)},
		{name: "denied ID", id: ca.Leaf(t, dbID), strict: denied, perm: denied, reason: "not authorized"},
		{name: "denied: * is one segment", id: ca.Leaf(t, deepID), strict: denied, perm: denied, reason: "not authorized"},
		{name: "denied: ** needs a segment", id: ca.Leaf(t, teamRoot), strict: denied, perm: denied, reason: "not authorized"},
		{name: "no certificate", strict: refused, perm: forwarded, strictReason: "no certificate", migration: "no-certificate"},
		{name: "plaintext", plaintext: true, strict: refused, perm: forwarded, strictReason: "not TLS", migration: "plaintext"},
		{name: "foreign trust domain", id: foreign.Leaf(t, foreignID), strict: refused, perm: refused, reason: "unknown authority"},
		{name: "expired", id: ca.Leaf(t, webID, testca.Expired()), strict: refused, perm: refused, reason: "expired"},
		{name: "not yet valid", id: ca.Leaf(t, webID, testca.NotYetValid()), strict: refused, perm: refused, reason: "not yet valid"},
		{name: "server-only usage", id: ca.Leaf(t, webID, testca.ServerOnly()), strict: refused, perm: refused, reason: "wrong key usage"},
		{name: "unknown CA, same trust domain", id: impostor.Leaf(t, webID), strict: refused, perm: refused, reason: "unknown authority"},
		{name: "signed by another CA's intermediate", id: ca.Leaf(t, webID, testca.SignedBy(impostor)), strict: refused, perm: refused, reason: "unknown authority"},
	}
}

// spoofed is sent by every HTTP client of the table, in several spellings.
var spoofed = http.Header{
	"X-Forwarded-Client-Cert": {"By=spiffe://example.org/evil;URI=" + adminID, "URI=" + adminID},
	"x-forwarded-client-cert": {"URI=" + adminID},
}

func TestInboundAuthorization(t *testing.T) {
	w := newWorld(t)
	table := peers(t, w)
	echo := testnet.Echo(t)
	web := httpBackend(t)
	for _, protocol := range []proxy.Protocol{proxy.TCP, proxy.HTTP} {
		for _, mode := range []proxy.Mode{proxy.Strict, proxy.Permissive} {
			for _, pc := range table {
				t.Run(fmt.Sprintf("%s/%s/%s", protocol, mode, pc.name), func(t *testing.T) {
					target := echo
					if protocol == proxy.HTTP {
						target = web
					}
					r := runInbound(t, w, proxy.InboundConfig{Target: target, Mode: mode, Protocol: protocol})
					want, reason := pc.strict, pc.reason
					if mode == proxy.Permissive {
						want = pc.perm
					} else if pc.strictReason != "" {
						reason = pc.strictReason
					}
					if protocol == proxy.TCP {
						checkTCP(t, w, r, pc, want)
					} else {
						checkHTTP(t, w, r, pc, want)
					}
					// Refusals at the handshake are counted and logged with the reason.
					if want == refused || want == denied && protocol == proxy.TCP {
						labels := map[string]string{"reason": reason}
						testwait.Eventually(t, func() bool {
							return metricValue(t, r.reg, "mutual_proxy_handshake_refusals_total", labels) == 1 &&
								metricValue(t, r.reg, "mutual_proxy_handshakes_total", map[string]string{"outcome": "refused"}) == 1
						}, fmt.Sprintf("mutual_proxy_handshake_refusals_total%v", labels))
						attrs := map[string]any{"reason": reason}
						if pc.id != nil {
							attrs["peer_id"] = pc.id.ID.String()
							attrs["serial"] = pki.FormatSerial(pc.id.Leaf().SerialNumber)
						}
						if !r.logs.Has("handshake refused", attrs) {
							t.Errorf("no log line \"handshake refused\" with %v in:\n%s", attrs, r.logs)
						}
					}
					if want == forwarded && !pc.plaintext {
						testwait.Eventually(t, func() bool {
							return metricValue(t, r.reg, "mutual_proxy_handshakes_total", map[string]string{"outcome": "ok"}) == 1
						}, "a handshake counted ok")
					}
					// Only permissive mode lets clients without certificates in, and reports them.
					snap := r.mig.Snapshot()
					if mode == proxy.Permissive && pc.migration != "" {
						if len(snap) != 1 || snap[0].Kind != pc.migration || snap[0].Source != "127.0.0.1" || snap[0].Count < 1 {
							t.Errorf("migration report = %+v, want one 127.0.0.1 source of kind %q", snap, pc.migration)
						}
					} else if len(snap) != 0 {
						t.Errorf("migration report = %+v, want empty", snap)
					}
				})
			}
		}
	}
}

func checkTCP(t *testing.T, w *world, r *proxyRun, pc peer, want outcome) {
	t.Helper()
	var cfg *tls.Config
	if !pc.plaintext {
		cfg = w.clientTLS(pc.id)
	}
	const msg = "hello through the proxy\n"
	got, err := testnet.RoundTrip(r.addr, cfg, msg)
	switch want {
	case forwarded:
		if err != nil || got != msg {
			t.Fatalf("round trip = %q, %v; want the echo", got, err)
		}
	default:
		if err == nil {
			t.Fatalf("round trip succeeded (%q); want the connection refused", got)
		}
		if got != "" {
			t.Errorf("a refused client read %q", got)
		}
	}
}

func checkHTTP(t *testing.T, w *world, r *proxyRun, pc peer, want outcome) {
	t.Helper()
	url := "https://" + r.addr + "/hello"
	c := httpClient(t, w.clientTLS(pc.id))
	if pc.plaintext {
		url = "http://" + r.addr + "/hello"
		c = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	}
	res := doRequest(c, "GET", url, spoofed)
	switch want {
	case refused:
		if res.err == nil {
			t.Fatalf("request got %d %q; want the connection refused", res.code, res.body)
		}
		return
	case denied:
		if res.err != nil || res.code != http.StatusForbidden {
			t.Fatalf("request = %d, %v; want 403", res.code, res.err)
		}
		for _, s := range []string{"forbidden", pc.id.ID.String(), "not allowed to GET /hello"} {
			if !strings.Contains(res.body, s) {
				t.Errorf("403 body %q does not say %q", res.body, s)
			}
		}
		if n := metricValue(t, r.reg, "mutual_proxy_request_duration_seconds", map[string]string{"code": "403"}); n != 1 {
			t.Errorf("403 requests counted %v times, want 1", n)
		}
		if !r.logs.Has("request", map[string]any{"outcome": "denied", "peer_id": pc.id.ID.String(), "status": 403.0}) {
			t.Errorf("no denied request log line in:\n%s", r.logs)
		}
		return
	}
	if res.err != nil || res.code != http.StatusOK {
		t.Fatalf("request = %d %q, %v; want 200", res.code, res.body, res.err)
	}
	if res.seen.Path != "/hello" || res.seen.Method != "GET" {
		t.Errorf("backend saw %s %s", res.seen.Method, res.seen.Path)
	}
	if !pc.plaintext && res.resp.ProtoMajor != 2 {
		t.Errorf("client spoke %s to the proxy; want HTTP/2", res.resp.Proto)
	}
	if pc.id == nil {
		// Anonymous (permissive) clients reach the service with no identity at all.
		if len(res.seen.XFCC) != 0 {
			t.Errorf("backend saw %s %q for a client without a certificate", proxy.XFCCHeader, res.seen.XFCC)
		}
		return
	}
	if len(res.seen.XFCC) != 1 {
		t.Fatalf("backend saw %s %q; want exactly the proxy's one value", proxy.XFCCHeader, res.seen.XFCC)
	}
	x := res.seen.XFCC[0]
	sum := sha256.Sum256(pc.id.Leaf().Raw)
	for _, s := range []string{"By=" + proxyID + ";", ";URI=" + pc.id.ID.String(), ";Hash=" + hex.EncodeToString(sum[:])} {
		if !strings.Contains(x, s) {
			t.Errorf("%s %q lacks %q", proxy.XFCCHeader, x, s)
		}
	}
	if strings.Contains(x, "evil") || strings.Contains(x, adminID) {
		t.Errorf("the client's spoofed %s reached the backend: %q", proxy.XFCCHeader, x)
	}
	if !r.logs.Has("request", map[string]any{"outcome": "forwarded", "peer_id": pc.id.ID.String(), "status": 200.0, "proto": "HTTP/2.0"}) {
		t.Errorf("no forwarded request log line in:\n%s", r.logs)
	}
}

// TestInboundHTTPVersions: HTTP/1.1 clients and HTTP/2 clients get the same
// treatment; the identity header reaches the service on both.
func TestInboundHTTPVersions(t *testing.T) {
	w := newWorld(t)
	r := runInbound(t, w, proxy.InboundConfig{Target: httpBackend(t), Protocol: proxy.HTTP})
	client := w.ca.Leaf(t, webID)
	for _, tt := range []struct {
		name   string
		protos []string
		h2     bool
		major  int
	}{
		{"ALPN h2", []string{"h2"}, true, 2},
		{"ALPN http/1.1", []string{"http/1.1"}, false, 1},
		{"no ALPN", nil, false, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := w.clientTLS(client, tt.protos...)
			tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: tt.h2}
			if !tt.h2 {
				tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			for i := range 3 { // several requests on one connection
				res := doRequest(c, "POST", fmt.Sprintf("https://%s/n/%d", r.addr, i), nil)
				if res.err != nil || res.code != 200 {
					t.Fatalf("request %d = %d, %v", i, res.code, res.err)
				}
				if res.resp.ProtoMajor != tt.major || res.resp.TLS.NegotiatedProtocol != strings.Join(tt.protos, "") && tt.protos != nil {
					t.Errorf("proto %s, ALPN %q", res.resp.Proto, res.resp.TLS.NegotiatedProtocol)
				}
				if len(res.seen.XFCC) != 1 || !strings.Contains(res.seen.XFCC[0], "URI="+webID) {
					t.Errorf("backend saw %q", res.seen.XFCC)
				}
				if res.seen.Path != fmt.Sprintf("/n/%d", i) || res.seen.Method != "POST" {
					t.Errorf("backend saw %s %s", res.seen.Method, res.seen.Path)
				}
			}
		})
	}
}

// writeFileAtomic replaces path the way editors and config managers do.
func writeFileAtomic(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

const rolesPolicy = `
rules:
  - ids: ["spiffe://example.org/ns/prod/web"]
  - roles: ["auditor"]
    methods: ["GET", "HEAD"]
    paths: ["/reports/"]
`

// TestInboundPolicyFileHTTP: roles from the certificate extension, methods
// and path prefixes, per request.
func TestInboundPolicyFileHTTP(t *testing.T) {
	w := newWorld(t)
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFileAtomic(t, path, rolesPolicy)
	pf, err := proxy.LoadPolicyFile(path, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := runInbound(t, w, proxy.InboundConfig{Target: httpBackend(t), Protocol: proxy.HTTP, Policy: pf})
	auditor := leafWithRoles(t, w.ca, auditorID, "viewer", "auditor")
	viewer := leafWithRoles(t, w.ca, auditorID, "viewer")
	plain := w.ca.Leaf(t, auditorID)
	web := w.ca.Leaf(t, webID)
	tests := []struct {
		name   string
		id     *identity.Identity
		method string
		path   string
		want   int
	}{
		{"role, GET in prefix", auditor, "GET", "/reports/q1", 200},
		{"role, HEAD in prefix", auditor, "HEAD", "/reports/", 200},
		{"role, POST in prefix", auditor, "POST", "/reports/q1", 403},
		{"role, DELETE in prefix", auditor, "DELETE", "/reports/q1", 403},
		{"role, GET outside prefix", auditor, "GET", "/admin", 403},
		{"role, GET prefix without its slash", auditor, "GET", "/reports", 403},
		{"other role only", viewer, "GET", "/reports/q1", 403},
		{"same ID without roles", plain, "GET", "/reports/q1", 403},
		{"ids rule, any method", web, "POST", "/admin", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := doRequest(httpClient(t, w.clientTLS(tt.id)), tt.method, "https://"+r.addr+tt.path, nil)
			if res.err != nil || res.code != tt.want {
				t.Fatalf("%s %s = %d %q, %v; want %d", tt.method, tt.path, res.code, res.body, res.err, tt.want)
			}
			if tt.want == 403 && tt.method != "HEAD" && !strings.Contains(res.body, tt.method+" "+tt.path) {
				t.Errorf("403 body %q does not name %s %s", res.body, tt.method, tt.path)
			}
		})
	}
}

// TestInboundPathTraversal: a path prefix rule must not be a way around
// itself. The backend (like most) resolves dot segments, so what it serves
// must lie inside the allowed prefix.
func TestInboundPathTraversal(t *testing.T) {
	w := newWorld(t)
	policyPath := filepath.Join(t.TempDir(), "policy.yaml")
	writeFileAtomic(t, policyPath, rolesPolicy)
	pf, err := proxy.LoadPolicyFile(policyPath, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := runInbound(t, w, proxy.InboundConfig{Target: httpBackend(t), Protocol: proxy.HTTP, Policy: pf})
	auditor := leafWithRoles(t, w.ca, auditorID, "auditor")
	for _, target := range []string{
		"/reports/../admin",
		"/reports/%2e%2e/admin",
		"/reports/..%2fadmin",
		"/reports/./../admin/keys",
	} {
		t.Run(target, func(t *testing.T) {
			c, err := tls.Dial("tcp", r.addr, w.clientTLS(auditor, "http/1.1"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n", target)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return // refused (403, 400): fine
			}
			var s seen
			if err := json.Unmarshal(b, &s); err != nil {
				t.Fatal(err)
			}
			if clean := path.Clean(s.Path); !strings.HasPrefix(clean, "/reports/") {
				t.Errorf("GET %s was allowed by the rule for /reports/ and the backend got %q, which is %s", target, s.Path, clean)
			}
		})
	}
}

// TestInboundPolicyFileTCP: in tcp mode a role-only rule authorizes the
// connection by the roles extension.
func TestInboundPolicyFileTCP(t *testing.T) {
	w := newWorld(t)
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFileAtomic(t, path, "rules:\n  - roles: [batch]\n  - ids: [\"spiffe://example.org/ns/prod/*\"]\n    methods: [GET]\n")
	pf, err := proxy.LoadPolicyFile(path, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := runInbound(t, w, proxy.InboundConfig{Target: testnet.Echo(t), Policy: pf})
	for _, tt := range []struct {
		name string
		id   *identity.Identity
		ok   bool
	}{
		{"role", leafWithRoles(t, w.ca, dbID, "batch"), true},
		{"other role", leafWithRoles(t, w.ca, dbID, "web"), false},
		// An HTTP-only rule (methods) does not open a tcp connection.
		{"method rule", w.ca.Leaf(t, webID), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := testnet.RoundTrip(r.addr, w.clientTLS(tt.id), "x")
			if (err == nil && got == "x") != tt.ok {
				t.Errorf("round trip = %q, %v; want ok=%v", got, err, tt.ok)
			}
		})
	}
}

// TestInboundPolicyReload: the file is followed; a broken file keeps the
// last good policy.
func TestInboundPolicyReload(t *testing.T) {
	w := newWorld(t)
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFileAtomic(t, path, "rules:\n  - ids: [\""+webID+"\"]\n")
	reg := prometheus.NewRegistry()
	m := proxy.NewMetrics(reg, "inbound")
	logs := &testlog.Buffer{}
	pf, err := proxy.LoadPolicyFile(path, nil, slogJSON(logs), m)
	if err != nil {
		t.Fatal(err)
	}
	r := runInbound(t, w, proxy.InboundConfig{Target: httpBackend(t), Protocol: proxy.HTTP, Policy: pf})
	web := httpClient(t, w.clientTLS(w.ca.Leaf(t, webID)))
	db := httpClient(t, w.clientTLS(w.ca.Leaf(t, dbID)))
	status := func(c *http.Client) int {
		res := doRequest(c, "GET", "https://"+r.addr+"/", nil)
		if res.err != nil {
			t.Fatal(res.err)
		}
		return res.code
	}
	if status(web) != 200 || status(db) != 403 {
		t.Fatal("the initial policy is not in force")
	}

	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- pf.Run(ctx, 20*time.Millisecond) }()
	var once sync.Once
	stopRun := func() {
		once.Do(func() {
			cancel()
			select {
			case <-ran:
			case <-time.After(10 * time.Second):
				t.Fatal("PolicyFile.Run did not return")
			}
		})
	}
	defer stopRun()

	// The new rule applies without a restart, on live connections too.
	writeFileAtomic(t, path, "rules:\n  - ids: [\""+dbID+"\"]\n    methods: [GET]\n")
	testwait.Eventually(t, func() bool { return status(db) == 200 }, "db allowed after the reload")
	if status(web) != 403 {
		t.Error("web still allowed after its rule was removed")
	}
	testwait.Eventually(t, func() bool {
		return metricValue(t, reg, "mutual_proxy_policy_reloads_total", map[string]string{"result": "ok"}) >= 1
	}, "reload counted")

	// A broken file: the last good policy stays, the failure is counted and logged.
	good := pf.Policy()
	writeFileAtomic(t, path, "rules:\n  - ids: [\"spiffe://example.org/**/x\"]\n")
	testwait.Eventually(t, func() bool {
		return metricValue(t, reg, "mutual_proxy_policy_reloads_total", map[string]string{"result": "error"}) == 1
	}, "failed reload counted")
	if pf.Policy() != good {
		t.Error("a broken file replaced the policy")
	}
	if status(db) != 200 || status(web) != 403 {
		t.Error("a broken file changed what is allowed")
	}
	if !r.logs.Has("request", map[string]any{"status": 200.0}) || !logs.Has("policy reload failed; keeping the last good policy", map[string]any{"file": path}) {
		t.Errorf("no reload failure logged:\n%s", logs)
	}
	stopRun()

	// Reload called directly says why.
	writeFileAtomic(t, path, "rules:\n  - ids: [\""+webID+"\"]\n  - methods: [GET]\n")
	changed, err := pf.Reload()
	if err == nil || changed || !strings.Contains(err.Error(), "rule 2") || !strings.Contains(err.Error(), path) {
		t.Errorf("Reload of a broken file = %v, %v; want an error naming the file and rule 2", changed, err)
	}
	if pf.Policy() != good {
		t.Error("Reload of a broken file replaced the policy")
	}
	os.Remove(path)
	if _, err := pf.Reload(); err == nil || pf.Policy() != good {
		t.Errorf("Reload of a missing file = %v; want an error and the last good policy", err)
	}
	// And a good file after a broken one is picked up.
	writeFileAtomic(t, path, "rules:\n  - ids: [\""+webID+"\"]\n")
	if changed, err := pf.Reload(); err != nil || !changed {
		t.Fatalf("Reload of a good file = %v, %v", changed, err)
	}
	if status(web) != 200 || status(db) != 403 {
		t.Error("the repaired file is not in force")
	}
}

func TestLoadPolicyFileErrors(t *testing.T) {
	dir := t.TempDir()
	base, _ := authz.FromPatterns([]string{webID})
	if _, err := proxy.LoadPolicyFile(filepath.Join(dir, "missing.yaml"), base, nil, nil); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	writeFileAtomic(t, bad, "rules:\n  - paths: [/]\n")
	if _, err := proxy.LoadPolicyFile(bad, base, nil, nil); err == nil || !strings.Contains(err.Error(), "rule 1") {
		t.Errorf("broken file: %v", err)
	}
	good := filepath.Join(dir, "good.yaml")
	writeFileAtomic(t, good, "rules:\n  - ids: [\""+dbID+"\"]\n")
	pf, err := proxy.LoadPolicyFile(good, base, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// --allow rules and the file's rules both apply.
	for _, s := range []string{webID, dbID} {
		if err := pf.Policy().Allow(authz.Request{ID: mustID(t, s)}); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
}

// TestInboundHalfClose: tcp mode relays byte for byte and respects
// half-close: the service answers only after the client's EOF reaches it.
func TestInboundHalfClose(t *testing.T) {
	w := newWorld(t)
	collect := collectBackend(t)
	client := w.ca.Leaf(t, webID)
	sizes := []int{0, 1, 4096, 16 << 10, 1<<20 + 7}
	for _, tt := range []struct {
		name      string
		mode      proxy.Mode
		id        *identity.Identity
		plaintext bool
	}{
		{"mtls strict", proxy.Strict, client, false},
		{"mtls permissive", proxy.Permissive, client, false},
		{"tls without certificate, permissive", proxy.Permissive, nil, false},
		{"plaintext, permissive", proxy.Permissive, nil, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := runInbound(t, w, proxy.InboundConfig{Target: collect, Mode: tt.mode})
			var total int64
			for _, n := range sizes {
				data := make([]byte, n)
				rand.Read(data)
				if tt.plaintext && n > 0 && data[0] == 0x16 {
					// A first byte of 0x16 is a TLS handshake to the
					// permissive proxy's sniffer (1 run in 256 failed).
					data[0] = 'p'
				}
				got, err := halfCloseRoundTrip(r.addr, w, tt.id, tt.plaintext, data)
				if err != nil {
					t.Fatalf("%d bytes: %v", n, err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("%d bytes sent, %d received, equal prefix %d", n, len(got), commonPrefix(got, data))
				}
				total += int64(n)
			}
			testwait.Eventually(t, func() bool {
				return metricValue(t, r.reg, "mutual_proxy_bytes_total", map[string]string{"flow": "to_target"}) == float64(total) &&
					metricValue(t, r.reg, "mutual_proxy_bytes_total", map[string]string{"flow": "to_peer"}) == float64(total)
			}, "bytes counted")
			testwait.Eventually(t, func() bool { return r.p.Active() == 0 }, "connections released")
			// Fewer connections than the default log limit: every one has
			// its line, with the peer and the bytes each way.
			if tt.id != nil && !r.logs.Has("connection", map[string]any{"peer_id": webID, "mtls": true,
				"bytes_to_target": float64(sizes[len(sizes)-1]), "bytes_to_peer": float64(sizes[len(sizes)-1])}) {
				t.Fatalf("no connection line with the peer and its bytes:\n%s", r.logs.String())
			}
		})
	}
}

func halfCloseRoundTrip(addr string, w *world, id *identity.Identity, plaintext bool, data []byte) ([]byte, error) {
	var c net.Conn
	var err error
	if plaintext {
		c, err = net.Dial("tcp", addr)
	} else {
		c, err = tls.Dial("tcp", addr, w.clientTLS(id))
	}
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c) // ends only at the service's close
	if err != nil {
		return got, err
	}
	return got, <-werr
}

// TestInboundFullDuplex streams both ways at once through an echo.
func TestInboundFullDuplex(t *testing.T) {
	w := newWorld(t)
	r := runInbound(t, w, proxy.InboundConfig{Target: testnet.Echo(t)})
	c, err := tls.Dial("tcp", r.addr, w.clientTLS(w.ca.Leaf(t, webID)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	data := make([]byte, 4<<20+3)
	rand.Read(data)
	go func() {
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 1000+len(rest)%7000)
			if _, err := c.Write(rest[:n]); err != nil {
				return
			}
			rest = rest[n:]
		}
		c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("sent %d bytes, got %d, equal prefix %d", len(data), len(got), commonPrefix(got, data))
	}
}

// TestInboundCloseConnections: the revocation hook cuts live connections
// of the matching certificate only.
func TestInboundCloseConnections(t *testing.T) {
	w := newWorld(t)
	for _, protocol := range []proxy.Protocol{proxy.TCP, proxy.HTTP} {
		t.Run(string(protocol), func(t *testing.T) {
			target := backendFor(t, protocol)
			r := runInbound(t, w, proxy.InboundConfig{Target: target, Protocol: protocol, Mode: proxy.Permissive})
			revoked, kept := w.ca.Leaf(t, webID), w.ca.Leaf(t, stagingID)
			open := func(id *identity.Identity) *rawConn {
				c, err := tls.Dial("tcp", r.addr, w.clientTLS(id, "http/1.1"))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				c.SetDeadline(time.Now().Add(10 * time.Second))
				rc := &rawConn{Conn: c, br: bufio.NewReader(c)}
				if err := ping(rc, protocol); err != nil {
					t.Fatal(err)
				}
				return rc
			}
			a, b, anon := open(revoked), open(kept), open(nil)
			serial := pki.FormatSerial(revoked.Leaf().SerialNumber)
			n := r.p.CloseConnections(func(_ spiffeid.ID, s string) bool { return s == serial })
			if n != 1 {
				t.Errorf("CloseConnections closed %d, want 1", n)
			}
			if err := ping(a, protocol); err == nil {
				t.Error("the revoked peer's connection still works")
			}
			if err := ping(b, protocol); err != nil {
				t.Errorf("another peer's connection was cut: %v", err)
			}
			if err := ping(anon, protocol); err != nil {
				t.Errorf("an anonymous connection was cut: %v", err)
			}
			// Closing every identified connection leaves the anonymous one.
			if n := r.p.CloseConnections(func(spiffeid.ID, string) bool { return true }); n < 1 {
				t.Errorf("closing all closed %d", n)
			}
			if err := ping(b, protocol); err == nil {
				t.Error("a connection survived closing all")
			}
			if err := ping(anon, protocol); err != nil {
				t.Errorf("an anonymous connection was cut: %v", err)
			}
		})
	}
}

// rawConn is a client connection with its read buffer.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

// ping does one exchange on a raw connection to the proxy.
func ping(c *rawConn, protocol proxy.Protocol) error {
	if protocol == proxy.TCP {
		if _, err := io.WriteString(c, "ping"); err != nil {
			return err
		}
		b := make([]byte, 4)
		if _, err := io.ReadFull(c.br, b); err != nil {
			return err
		}
		if string(b) != "ping" {
			return fmt.Errorf("read %q", b)
		}
		return nil
	}
	if _, err := io.WriteString(c, "GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return errors.New(resp.Status)
	}
	return nil
}

// TestRolesExtension: the roles a certificate is issued with are the roles
// the proxy authorizes, through the identity package's own encoder.
func TestRolesExtension(t *testing.T) {
	ca := testca.New(t)
	for _, roles := range [][]string{{"auditor"}, {"viewer", "auditor"}, {"ünïcode", "a b"}} {
		ext, err := identity.RolesExtension(roles)
		if err != nil {
			t.Errorf("identity.RolesExtension(%q): %v", roles, err)
			continue
		}
		if !ext.Id.Equal(identity.RolesOID) || ext.Critical {
			t.Errorf("extension %v critical=%v", ext.Id, ext.Critical)
		}
		if want := rolesExtension(t, roles).Value; !bytes.Equal(ext.Value, want) {
			t.Errorf("RolesExtension(%q) = %x, want SEQUENCE OF UTF8String %x", roles, ext.Value, want)
		}
		cert := ca.Leaf(t, auditorID, testca.Extension(ext)).Leaf()
		if got := identity.Roles(cert); strings.Join(got, "|") != strings.Join(roles, "|") {
			t.Errorf("Roles = %q, want %q", got, roles)
		}
	}
}

// TestInboundXFCCHopByHop: a client cannot make the proxy's identity header
// disappear by declaring it hop-by-hop (Connection: X-Forwarded-Client-Cert);
// the service must always learn who called.
func TestInboundXFCCHopByHop(t *testing.T) {
	w := newWorld(t)
	r := runInbound(t, w, proxy.InboundConfig{Target: httpBackend(t), Protocol: proxy.HTTP})
	client := w.ca.Leaf(t, webID)
	for _, conn := range []string{
		proxy.XFCCHeader,
		"keep-alive, x-forwarded-client-cert",
	} {
		t.Run(conn, func(t *testing.T) {
			c, err := tls.Dial("tcp", r.addr, w.clientTLS(client, "http/1.1"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "GET /hop HTTP/1.1\r\nHost: backend\r\nConnection: %s\r\n%s: URI=%s\r\n\r\n", conn, proxy.XFCCHeader, adminID)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var s seen
			if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
				t.Fatalf("%s: %v", resp.Status, err)
			}
			if len(s.XFCC) != 1 || !strings.Contains(s.XFCC[0], "URI="+webID) {
				t.Errorf("with Connection: %s the service saw %s %q; want the caller's identity %s", conn, proxy.XFCCHeader, s.XFCC, webID)
			}
		})
	}
}

// xfccPairs splits an X-Forwarded-Client-Cert value into key=value pairs
// the way a service would (Envoy's format: ',' between elements, ';'
// between pairs, values with special characters double-quoted, \" a quote
// inside them), counting the elements.
func xfccPairs(v string) (pairs [][2]string, elements int) {
	elements = 1
	var key, cur strings.Builder
	inKey, quoted := true, false
	flush := func() {
		pairs = append(pairs, [2]string{key.String(), cur.String()})
		key.Reset()
		cur.Reset()
		inKey = true
	}
	for i := 0; i < len(v); i++ {
		ch := v[i]
		switch {
		case quoted && ch == '\\' && i+1 < len(v) && v[i+1] == '"':
			i++
			cur.WriteByte('"')
		case ch == '"':
			quoted = !quoted
		case !quoted && ch == ';':
			flush()
		case !quoted && ch == ',':
			flush()
			elements++
		case inKey && ch == '=':
			inKey = false
		case inKey:
			key.WriteByte(ch)
		default:
			cur.WriteByte(ch)
		}
	}
	flush()
	return pairs, elements
}

// TestInboundXFCCFormat: the header is one element whose By, Hash, Subject,
// URI and DNS fields say who called, and a name in the certificate cannot
// add fields or elements of its own.
func TestInboundXFCCFormat(t *testing.T) {
	w := newWorld(t)
	r := runInbound(t, w, proxy.InboundConfig{Target: httpBackend(t), Protocol: proxy.HTTP})
	for _, tt := range []struct {
		name string
		dns  []string
	}{
		{"no DNS names", nil},
		{"DNS names", []string{"web.example.org", "web"}},
		{"DNS name with a separator", []string{"x;URI=" + adminID}},
		{"DNS name with a comma", []string{"x,By=spiffe://example.org/evil;URI=" + adminID}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			client := w.ca.Leaf(t, webID, testca.DNS(tt.dns...))
			res := getOnce(w.clientTLS(client), "https://"+r.addr+"/")
			if res.err != nil || res.code != 200 || len(res.seen.XFCC) != 1 {
				t.Fatalf("request = %d, %v, %q", res.code, res.err, res.seen.XFCC)
			}
			pairs, elements := xfccPairs(res.seen.XFCC[0])
			got := map[string][]string{}
			for _, p := range pairs {
				got[p[0]] = append(got[p[0]], p[1])
			}
			sum := sha256.Sum256(client.Leaf().Raw)
			want := map[string][]string{
				"By":      {proxyID},
				"Hash":    {hex.EncodeToString(sum[:])},
				"Subject": {client.Leaf().Subject.String()},
				"URI":     {webID},
			}
			if tt.dns != nil {
				want["DNS"] = tt.dns
			}
			if elements != 1 || fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s %q reads as %d element(s) %v; want 1 element %v", proxy.XFCCHeader, res.seen.XFCC[0], elements, got, want)
			}
		})
	}
}

// TestInboundLeafOnlyClient: a client that sends its leaf without the
// intermediate (as openssl s_client -cert and curl do with a one-certificate
// file) is verified with the proxy's own intermediates; one from another CA
// still is not.
func TestInboundLeafOnlyClient(t *testing.T) {
	w := newWorld(t)
	impostor := testca.New(t)
	r := runInbound(t, w, proxy.InboundConfig{Target: testnet.Echo(t)})
	for _, tt := range []struct {
		name string
		id   *identity.Identity
		ok   bool
	}{
		{"our CA", w.ca.Leaf(t, webID), true},
		{"another CA", impostor.Leaf(t, webID), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := w.clientTLS(nil)
			cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{tt.id.Leaf().Raw}, PrivateKey: tt.id.Key}}
			got, err := testnet.RoundTrip(r.addr, cfg, "x")
			if (err == nil && got == "x") != tt.ok {
				t.Errorf("round trip = %q, %v; want ok=%v", got, err, tt.ok)
			}
		})
	}
}

// TestInboundOCSPStaple: the staple reaches the client with the proxy's
// certificate, and follows the certificate it is asked for.
func TestInboundOCSPStaple(t *testing.T) {
	w := newWorld(t)
	r := runInbound(t, w, proxy.InboundConfig{Target: testnet.Echo(t), Staple: func(leaf *x509.Certificate) []byte {
		return []byte("staple for " + leaf.SerialNumber.String())
	}})
	c, err := tls.Dial("tcp", r.addr, w.clientTLS(w.ca.Leaf(t, webID)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cs := c.ConnectionState()
	if want := "staple for " + cs.PeerCertificates[0].SerialNumber.String(); string(cs.OCSPResponse) != want {
		t.Errorf("OCSP response %q, want %q", cs.OCSPResponse, want)
	}
}
