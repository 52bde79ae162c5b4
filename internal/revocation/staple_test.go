package revocation_test

import (
	"context"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/testca"
)

// stapleStatus parses a stapled response for me; -1 when there is none.
func stapleStatus(t testing.TB, raw []byte, me *identity.Identity) int {
	t.Helper()
	if raw == nil {
		return -1
	}
	r, err := ocsp.ParseResponseForCert(raw, me.Leaf(), me.Chain[1])
	if err != nil {
		t.Fatalf("stapled response: %v", err)
	}
	return r.Status
}

// TestStaplerNeverStaplesGoodForRevoked attacks the stapler as someone who
// answers for the OCSP responder named in the proxy's certificate (a plain
// HTTP URL): after the proxy's own certificate is revoked, it keeps
// replaying the correctly signed "good" response it served before. The
// revocation must withdraw the staple at once, and the replayed "good"
// must never be stapled again; the real "revoked" answer is.
func TestStaplerNeverStaplesGoodForRevoked(t *testing.T) {
	t.Parallel()
	c := testca.New(t)
	var mu sync.Mutex
	var answer []byte
	var asked atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		asked.Add(1)
		mu.Lock()
		b := answer
		mu.Unlock()
		w.Header().Set("Content-Type", "application/ocsp-response")
		w.Write(b)
	}))
	t.Cleanup(srv.Close)

	key, err := pki.GenerateKey(pki.KeyECDSAP256, nil)
	if err != nil {
		t.Fatal(err)
	}
	sid := spiffeid.RequireFromString(proxyID)
	leaf, err := c.Issuer.Issue(pki.Leaf{ID: sid, PublicKey: key.Public(), TTL: time.Hour, Now: time.Now(),
		OCSPServers: []string{srv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	me := &identity.Identity{ID: sid, Chain: []*x509.Certificate{leaf, c.Issuer.Cert}, Key: key, Roots: []*x509.Certificate{c.Root}}
	dir := filepath.Join(t.TempDir(), "proxy")
	if err := me.Save(dir); err != nil {
		t.Fatal(err)
	}
	src, err := identity.NewDirSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	respond := func(status int, produced time.Time) []byte {
		tmpl := ocsp.Response{Status: status, SerialNumber: leaf.SerialNumber, ThisUpdate: produced.Add(-time.Minute), NextUpdate: produced.Add(time.Hour)}
		if status == ocsp.Revoked {
			tmpl.RevokedAt, tmpl.RevocationReason = produced.Add(-time.Second), ocsp.KeyCompromise
		}
		der, err := ocsp.CreateResponse(c.Issuer.Cert, c.Issuer.Cert, tmpl, c.Issuer.Key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	set := func(b []byte) { mu.Lock(); answer = b; mu.Unlock() }
	askedMore := func(n int64) {
		t.Helper()
		base := asked.Load()
		eventually(t, 15*time.Second, "the stapler stopped asking the responder", func() bool { return asked.Load() >= base+n })
	}

	good := respond(ocsp.Good, time.Now().Add(-time.Minute))
	set(good)
	var revoked sync.Map
	st := &revocation.Stapler{Source: src, Revoked: func(s string) bool { _, ok := revoked.Load(s); return ok }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); st.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, 10*time.Second, "no staple fetched", func() bool { return stapleStatus(t, st.Staple(leaf), me) == ocsp.Good })

	// The proxy's certificate is revoked; the watcher tells the stapler.
	serial := serialOf(leaf)
	revoked.Store(serial, true)
	st.Revoke(revocation.Event{Serial: serial, RevokedAt: time.Now()})
	if got := stapleStatus(t, st.Staple(leaf), me); got == ocsp.Good {
		t.Fatal(`BUG: the revoked certificate is still stapled "good" after the revocation event`)
	}
	// The responder replays the old "good" answer: never stapled.
	askedMore(2)
	if got := stapleStatus(t, st.Staple(leaf), me); got == ocsp.Good {
		t.Fatal(`BUG: a replayed "good" response older than the revocation was stapled`)
	}
	// Even a "good" signed after the revocation event is refused while
	// the watcher knows the certificate revoked.
	set(respond(ocsp.Good, time.Now().Add(time.Minute)))
	askedMore(2)
	if got := stapleStatus(t, st.Staple(leaf), me); got == ocsp.Good {
		t.Fatal(`BUG: "good" stapled for a certificate the watcher knows revoked`)
	}
	// The true answer is stapled.
	set(respond(ocsp.Revoked, time.Now()))
	eventually(t, 10*time.Second, `the "revoked" answer was never stapled`, func() bool { return stapleStatus(t, st.Staple(leaf), me) == ocsp.Revoked })
}

// TestProxyOwnRevokedCertificateStaple: a proxy wired as `mutual proxy
// inbound` (watcher on the CA's feed, stapler) whose own certificate is
// revoked stops stapling "good" as soon as its watcher learns it, and
// staples the CA's "revoked" answer after.
func TestProxyOwnRevokedCertificateStaple(t *testing.T) {
	t.Parallel()
	e := startCA(t, "")
	src := e.proxyIdentity(t)
	me := src.Identity()
	w := &revocation.Watcher{CAURLs: []string{e.svc.URL}, Source: src}
	st := &revocation.Stapler{Source: src, Revoked: w.Revoked}
	w.OnRevoke = st.Revoke
	pol, _ := authz.FromPatterns([]string{"spiffe://example.org/ns/prod/*"})
	p, err := proxy.NewInbound(proxy.InboundConfig{Target: echoServer(t), SVID: src, Bundle: src, Policy: proxy.StaticPolicy{P: pol},
		PeerCheck: w.Check, Staple: st.Staple, Limits: proxy.Limits{DrainTimeout: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); w.Run(ctx) }()
	go func() { defer wg.Done(); st.Run(ctx) }()
	go func() { defer wg.Done(); p.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	eventually(t, 10*time.Second, "the watcher never connected to the feed", w.FeedUp)
	eventually(t, 10*time.Second, "no staple fetched", func() bool { return st.Staple(me.Leaf()) != nil })

	cl := e.enroll(t, "spiffe://example.org/ns/prod/client", api.TokenRequest{})
	stapled := func() int {
		pc, err := dialProxy(t, ln.Addr().String(), cl)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.conn.Close()
		return stapleStatus(t, pc.conn.ConnectionState().OCSPResponse, me)
	}
	if got := stapled(); got != ocsp.Good {
		t.Fatalf("staple before the revocation: %d, want good", got)
	}
	e.revoke(t, me.Leaf(), "keyCompromise")
	eventually(t, 10*time.Second, "the watcher never learnt its own revocation", func() bool { return w.Revoked(serialOf(me.Leaf())) })
	if got := stapled(); got == ocsp.Good {
		t.Fatal(`BUG: the proxy still staples "good" for its own revoked certificate`)
	}
	eventually(t, 10*time.Second, `the CA's "revoked" answer was never stapled`, func() bool { return stapled() == ocsp.Revoked })
}
