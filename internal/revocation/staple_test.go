package revocation_test

import (
	"context"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testwait"
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
	src := proxySource(t, c, me)
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
		testwait.Eventually(t, func() bool { return asked.Load() >= base+n }, "the stapler stopped asking the responder")
	}

	good := respond(ocsp.Good, time.Now().Add(-time.Minute))
	set(good)
	var revoked sync.Map
	st := &revocation.Stapler{Source: src, Revoked: func(s string) bool { _, ok := revoked.Load(s); return ok }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); st.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testwait.Eventually(t, func() bool { return stapleStatus(t, st.Staple(leaf), me) == ocsp.Good }, "no staple fetched")

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
	testwait.Eventually(t, func() bool { return stapleStatus(t, st.Staple(leaf), me) == ocsp.Revoked }, `the "revoked" answer was never stapled`)
}
