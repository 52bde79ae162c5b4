package proxy_test

import (
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testnet"
)

const (
	acmeID   = "spiffe://example.org/partner/acme/billing"
	globexID = "spiffe://partner.example/ns/prod/client"
)

// partnerFeed is a PartnerSource whose partnerships the test sets.
type partnerFeed struct {
	cur  atomic.Pointer[authz.Partners]
	mu   sync.Mutex
	seen map[spiffeid.ID]int
}

func (f *partnerFeed) Partners() *authz.Partners { return f.cur.Load() }

func (f *partnerFeed) Seen(id spiffeid.ID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen == nil {
		f.seen = map[spiffeid.ID]int{}
	}
	f.seen[id]++
}

func (f *partnerFeed) timesSeen(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[spiffeid.RequireFromString(id)]
}

// set installs the partnerships acme (local, no PKI) and globex
// (partner.example), with the scopes given.
func (f *partnerFeed) set(t testing.TB, acme, globex authz.Scope) {
	t.Helper()
	f.cur.Store(authz.NewPartners([]authz.Partnership{
		{Name: "acme", Scope: acme},
		{Name: "globex", TrustDomain: spiffeid.RequireTrustDomainFromString("partner.example"), Scope: globex},
	}))
}

func scope(t testing.TB, services []string, requests ...string) authz.Scope {
	t.Helper()
	s, err := authz.ParseScope(services, requests)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// partnerWorld is a proxy whose own policy allows everyone of both trust
// domains every request, so that every refusal below is the scope's.
type partnerWorld struct {
	*world
	bundles *x509bundle.Set
	feed    *partnerFeed
	acme    *identity.Identity
	globex  *identity.Identity
	local   *identity.Identity
}

func newPartnerWorld(t *testing.T) *partnerWorld {
	w := newWorld(t)
	foreignCA := testca.New(t, testca.WithTrustDomain("partner.example"))
	// The partner's own CA writes whatever it likes: roles, and an
	// extension under mutual's arc claiming every method and path.
	forged := pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1, 2}, Value: mustMarshal(t, []string{"* /*", "spiffe://example.org/**"})}
	globex := foreignCA.Leaf(t, globexID, testca.Extension(rolesExtension(t, []string{"admin"})), testca.Extension(forged))
	pol, err := authz.Parse([]byte("rules:\n  - ids: [\"spiffe://example.org/**\", \"spiffe://partner.example/**\"]\n  - roles: [admin]\n"))
	if err != nil {
		t.Fatal(err)
	}
	w.policy = proxy.StaticPolicy{P: pol}
	return &partnerWorld{
		world:   w,
		bundles: w.bundleWith(foreignCA),
		feed:    &partnerFeed{},
		acme:    leafWithRoles(t, w.ca, acmeID, "admin"),
		globex:  globex,
		local:   w.ca.Leaf(t, webID),
	}
}

func mustMarshal(t testing.TB, v []string) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (pw *partnerWorld) run(t *testing.T, protocol proxy.Protocol, partners proxy.PartnerSource) *proxyRun {
	return runInbound(t, pw.world, proxy.InboundConfig{SVID: pw.src, Bundle: pw.bundles, Target: backendFor(t, protocol),
		Protocol: protocol, Partners: partners})
}

func (pw *partnerWorld) get(t *testing.T, r *proxyRun, id *identity.Identity, method, path string) int {
	t.Helper()
	res := doRequest(httpClient(t, pw.clientTLS(id)), method, "https://"+r.addr+path, nil)
	if res.err != nil {
		t.Fatalf("%s %s: %v", method, path, res.err)
	}
	return res.code
}

// TestPartnerReachesOnlyItsScope attacks the scope in http mode: a
// partner's peer, local (no PKI) or of a federated trust domain, that the
// service's own policy allows everything (by ID and by a role it carries)
// reaches only the methods and paths of services its partnership names.
func TestPartnerReachesOnlyItsScope(t *testing.T) {
	pw := newPartnerWorld(t)
	orders := scope(t, []string{proxyID}, "GET,HEAD /v1/orders/")
	pw.feed.set(t, orders, orders)
	r := pw.run(t, proxy.HTTP, pw.feed)
	for _, c := range []struct {
		name         string
		id           *identity.Identity
		method, path string
		want         int
	}{
		{"acme, in scope", pw.acme, "GET", "/v1/orders/7", http.StatusOK},
		{"acme, unscoped method", pw.acme, "DELETE", "/v1/orders/7", http.StatusForbidden},
		{"acme, unscoped path", pw.acme, "GET", "/v1/admin", http.StatusForbidden},
		{"acme, the prefix without its slash", pw.acme, "GET", "/v1/orders", http.StatusForbidden},
		{"globex, in scope", pw.globex, "GET", "/v1/orders/7", http.StatusOK},
		{"globex with forged roles and scope, unscoped path", pw.globex, "GET", "/v1/admin", http.StatusForbidden},
		{"globex with forged roles and scope, unscoped method", pw.globex, "POST", "/v1/orders/7", http.StatusForbidden},
		{"a local workload: the policy alone", pw.local, "DELETE", "/v1/admin", http.StatusOK},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := pw.get(t, r, c.id, c.method, c.path); got != c.want {
				t.Errorf("%s %s: status %d, want %d", c.method, c.path, got, c.want)
			}
		})
	}
	if pw.feed.timesSeen(acmeID) == 0 || pw.feed.timesSeen(globexID) == 0 {
		t.Errorf("partners' peers not reported as seen: %v", pw.feed.seen)
	}
	if n := pw.feed.timesSeen(webID); n != 0 {
		t.Errorf("a local workload was reported as a partner's peer %d times", n)
	}
}

// TestPartnerOutsideItsServices: a scope that names another service, a
// partnership the proxy does not know (ended), a proxy that knows no
// partnership at all, and one that has not learnt them yet all refuse the
// partner's peer.
func TestPartnerOutsideItsServices(t *testing.T) {
	pw := newPartnerWorld(t)
	elsewhere := scope(t, []string{"spiffe://example.org/ns/prod/other", "spiffe://example.org/ns/staging/**"})
	pw.feed.set(t, elsewhere, elsewhere)
	unknown := &partnerFeed{}
	unknown.cur.Store(authz.PartnersUnknown())
	ended := &partnerFeed{}
	ended.cur.Store(authz.NewPartners(nil))
	for _, c := range []struct {
		name       string
		partners   proxy.PartnerSource
		globexWant int
	}{
		{"a scope naming other services", pw.feed, http.StatusForbidden},
		{"partnerships ended", ended, http.StatusOK}, // partner.example is no partner's any more: the policy decides
		{"partnerships not learnt yet", unknown, http.StatusForbidden},
		{"no partner source", nil, http.StatusOK},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := pw.run(t, proxy.HTTP, c.partners)
			if got := pw.get(t, r, pw.acme, "GET", "/v1/orders/7"); got != http.StatusForbidden {
				t.Errorf("acme: status %d, want 403", got)
			}
			if got := pw.get(t, r, pw.globex, "GET", "/v1/orders/7"); got != c.globexWant {
				t.Errorf("globex: status %d, want %d", got, c.globexWant)
			}
			if got := pw.get(t, r, pw.local, "GET", "/v1/orders/7"); got != http.StatusOK {
				t.Errorf("a local workload: status %d, want 200", got)
			}
		})
	}
}

// TestPartnerScopeNarrowedOnAnOpenConnection: the partner's next request
// on the same connection is judged by the new scope, although the policy
// (which allows it everything) has not changed.
func TestPartnerScopeNarrowedOnAnOpenConnection(t *testing.T) {
	pw := newPartnerWorld(t)
	pw.feed.set(t, scope(t, []string{proxyID}), scope(t, []string{proxyID}))
	r := pw.run(t, proxy.HTTP, pw.feed)
	c := httpClient(t, pw.clientTLS(pw.acme))
	var reused []bool
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = append(reused, i.Reused) }}
	do := func() int {
		req, err := http.NewRequest("GET", "https://"+r.addr+"/v1/orders/7", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := do(); got != http.StatusOK {
		t.Fatalf("before narrowing: status %d, want 200", got)
	}
	pw.feed.set(t, scope(t, []string{proxyID}, "GET /v1/status"), scope(t, []string{proxyID}))
	if got := do(); got != http.StatusForbidden {
		t.Errorf("after narrowing: status %d, want 403", got)
	}
	if len(reused) != 2 || !reused[1] {
		t.Fatalf("the second request did not reuse the connection (reused: %v): the test proves nothing", reused)
	}
}

// TestPartnerScopeInTCPMode: a whole connection passes only a scope that
// names the service and no methods or paths (which tcp mode cannot judge).
func TestPartnerScopeInTCPMode(t *testing.T) {
	pw := newPartnerWorld(t)
	for _, c := range []struct {
		name  string
		scope authz.Scope
		want  bool
	}{
		{"the service, every request", scope(t, []string{"spiffe://example.org/ns/prod/*"}), true},
		{"the service, some paths", scope(t, []string{proxyID}, "GET /v1/orders/"), false},
		{"another service", scope(t, []string{"spiffe://example.org/ns/prod/other"}), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			pw.feed.set(t, c.scope, c.scope)
			r := pw.run(t, proxy.TCP, pw.feed)
			for _, id := range []*identity.Identity{pw.acme, pw.globex} {
				_, err := testnet.RoundTrip(r.addr, pw.clientTLS(id), "hello")
				if got := err == nil; got != c.want {
					t.Errorf("%s admitted = %v, want %v (%v)", id.ID, got, c.want, err)
				}
			}
		})
	}
}

// TestPartnerScopeNarrowedClosesTCPConnections: in tcp mode, where no
// request follows to be judged, CloseOutOfScope closes the live
// connections of partners' peers the new scope no longer lets in, and
// only those.
func TestPartnerScopeNarrowedClosesTCPConnections(t *testing.T) {
	pw := newPartnerWorld(t)
	all := scope(t, []string{proxyID})
	pw.feed.set(t, all, all)
	r := pw.run(t, proxy.TCP, pw.feed)
	open := func(id *identity.Identity) *tls.Conn {
		c, err := tls.Dial("tcp", r.addr, pw.clientTLS(id))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("%s: echo before narrowing: %v", id.ID, err)
		}
		return c
	}
	acme, globex, local := open(pw.acme), open(pw.globex), open(pw.local)
	if n := r.p.CloseOutOfScope(); n != 0 {
		t.Fatalf("closed %d connections with the scope unchanged", n)
	}
	// acme now reaches another service only; globex keeps its scope.
	pw.feed.set(t, scope(t, []string{"spiffe://example.org/ns/prod/other"}), all)
	if n := r.p.CloseOutOfScope(); n != 1 {
		t.Errorf("closed %d connections, want acme's only", n)
	}
	acme.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := acme.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("acme's connection stayed open (read: %v)", err)
	}
	for _, c := range []*tls.Conn{globex, local} {
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
			t.Errorf("a connection still in scope was closed: %v", err)
		}
	}
}
