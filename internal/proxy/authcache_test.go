package proxy_test

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
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
	get := func(path string) (code int, reused bool) {
		t.Helper()
		req, err := http.NewRequest("GET", "https://"+r.addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
		}))
		res := doRequestWith(c, req)
		if res.err != nil {
			return 0, reused
		}
		if res.code == http.StatusOK && len(res.seen.XFCC) != 1 {
			t.Errorf("GET %s: the service saw X-Forwarded-Client-Cert %q; want the proxy's one value", path, res.seen.XFCC)
		}
		return res.code, reused
	}
	step := func(what, path string, want int, wantReused bool) {
		t.Helper()
		code, reused := get(path)
		if code != want || reused != wantReused {
			t.Fatalf("%s: GET %s = %d (connection reused %v); want %d (reused %v)", what, path, code, reused, want, wantReused)
		}
	}
	step("allowed by an ids-only rule", "/a", 200, false)
	step("again, remembered for the connection", "/b", 200, true)

	pol.p.Store(mustPolicy(t, "rules:\n  - ids: [\""+dbID+"\"]\n"))
	step("after a policy change that drops the peer", "/a", 403, true)

	pol.p.Store(mustPolicy(t, "rules:\n  - ids: [\""+webID+"\"]\n    paths: [\"/public/\"]\n"))
	step("path rule, inside", "/public/x", 200, true)
	step("path rule, outside", "/private", 403, true)
	step("path rule, inside again", "/public/y", 200, true)

	pol.p.Store(mustPolicy(t, "rules:\n  - ids: [\""+webID+"\"]\n"))
	step("allowed again", "/private", 200, true)

	revoked.Store(true)
	if n := r.p.CloseConnections(func(id spiffeid.ID, _ string) bool { return id.String() == webID }); n != 1 {
		t.Fatalf("CloseConnections closed %d connections; want 1", n)
	}
	if code, _ := get("/a"); code != 0 {
		t.Fatalf("after revocation: GET /a = %d; want no answer (the handshake is refused)", code)
	}
}

// doRequestWith sends req on c and reads the answer as doRequest does.
func doRequestWith(c *http.Client, req *http.Request) result {
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
