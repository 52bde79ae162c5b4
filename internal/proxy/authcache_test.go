package proxy_test

import (
	"crypto/x509"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/proxy"
)

// swapPolicy is a PolicySource whose policy a test replaces, as a reload
// of a policy file does (a new *authz.Policy each time).
type swapPolicy struct{ p atomic.Pointer[authz.Policy] }

func (s *swapPolicy) Policy() *authz.Policy { return s.p.Load() }

func mustPolicy(t *testing.T, yaml string) *authz.Policy {
	t.Helper()
	p, err := authz.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHTTPAuthorizationCachePerConnection: the proxy remembers per
// connection that a peer is allowed every request, but only under the
// policy that allowed it: on one keep-alive connection, a policy change
// denies the next request, path rules stay per request, and revocation
// closes the connection (and its memory) for good.
func TestHTTPAuthorizationCachePerConnection(t *testing.T) {
	w := newWorld(t)
	pol := &swapPolicy{}
	pol.p.Store(mustPolicy(t, "rules:\n  - ids: [\""+webID+"\"]\n"))
	var revoked atomic.Bool
	check := func(spiffeid.ID, []*x509.Certificate) error {
		if revoked.Load() {
			return errors.New("certificate revoked")
		}
		return nil
	}
	r := runInbound(t, w, proxy.InboundConfig{Target: httpBackend(t), Protocol: proxy.HTTP, Policy: pol, PeerCheck: check})
	web := w.ca.Leaf(t, webID)
	// HTTP/1.1, one connection, kept alive between requests.
	tr := &http.Transport{TLSClientConfig: w.clientTLS(web), MaxConnsPerHost: 1}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr}
	// conns is how many connections the proxy has accepted so far.
	conns := func() float64 {
		return metricValue(t, r.reg, "mutual_proxy_connections_total", map[string]string{"outcome": "ok"})
	}
	get := func(path string) int {
		t.Helper()
		res := doRequest(c, "GET", "https://"+r.addr+path, nil)
		if res.err != nil {
			return 0
		}
		if res.code == http.StatusOK && len(res.seen.XFCC) != 1 {
			t.Errorf("GET %s: the service saw X-Forwarded-Client-Cert %q; want the proxy's one value", path, res.seen.XFCC)
		}
		return res.code
	}
	step := func(what, path string, want int) {
		t.Helper()
		if code := get(path); code != want {
			t.Fatalf("%s: GET %s = %d; want %d", what, path, code, want)
		}
		if n := conns(); n != 1 {
			t.Fatalf("%s: the proxy accepted %v connections; want the one kept alive", what, n)
		}
	}
	step("allowed by an ids-only rule", "/a", 200)
	step("again, remembered for the connection", "/b", 200)

	pol.p.Store(mustPolicy(t, "rules:\n  - ids: [\""+dbID+"\"]\n"))
	step("after a policy change that drops the peer", "/a", 403)

	pol.p.Store(mustPolicy(t, "rules:\n  - ids: [\""+webID+"\"]\n    paths: [\"/public/\"]\n"))
	step("path rule, inside", "/public/x", 200)
	step("path rule, outside", "/private", 403)
	step("path rule, inside again", "/public/y", 200)

	pol.p.Store(mustPolicy(t, "rules:\n  - ids: [\""+webID+"\"]\n"))
	step("allowed again", "/private", 200)

	revoked.Store(true)
	if n := r.p.CloseConnections(func(id spiffeid.ID, _ string) bool { return id.String() == webID }); n != 1 {
		t.Fatalf("CloseConnections closed %d connections; want 1", n)
	}
	if code := get("/a"); code != 0 {
		t.Fatalf("after revocation: GET /a = %d; want no answer (the handshake is refused)", code)
	}
}
