package revocation_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testclock"
	"github.com/mutual-tls/mutual/internal/testwait"
	"github.com/mutual-tls/mutual/tlsconfig"
)

// crlServer serves, over plain HTTP, a CRL signed by signer and listing
// serials, and no feed.
func crlServer(t testing.TB, signer *testca.CA, serials ...*big.Int) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now(), ReasonCode: 1})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Minute),
		NextUpdate: time.Now().Add(time.Hour), RevokedCertificateEntries: entries}, signer.Issuer.Cert, signer.Issuer.Key)
	if err != nil {
		t.Fatal(err)
	}
	var fetches atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/crl/") {
			fetches.Add(1)
			w.Header().Set("X-Mutual-Revocation-Seq", "7")
			w.Write(der)
			return
		}
		http.Error(w, "no feed here", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	return srv, &fetches
}

// TestWatcherCRL: the watcher takes revocations from a CRL signed by its
// issuing CA only, and its Check refuses them with the revoked reason.
func TestWatcherCRL(t *testing.T) {
	t.Parallel()
	c := testca.New(t)
	src := proxySource(t, c, nil)
	victim := c.Leaf(t, "spiffe://example.org/ns/prod/victim")
	run := func(w *revocation.Watcher) func() {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}

	t.Run("signed by the issuing CA", func(t *testing.T) {
		srv, fetches := crlServer(t, c, victim.Leaf().SerialNumber)
		w := &revocation.Watcher{CAURLs: []string{srv.URL}, Source: src, CRLInterval: 100 * time.Millisecond}
		stop := run(w)
		defer stop()
		testwait.Eventually(t, func() bool { return w.Revoked(serialOf(victim.Leaf())) }, "the CRL's revocation was not learnt")
		err := w.Check(victim.ID, victim.Chain)
		var pe *tlsconfig.PeerError
		if !errors.As(err, &pe) || pe.Reason != tlsconfig.ReasonRevoked {
			t.Fatalf("Check: %v, want a revoked PeerError", err)
		}
		if err := w.Check(src.Identity().ID, src.Identity().Chain); err != nil {
			t.Fatalf("Check of a good certificate: %v", err)
		}
		if err := w.Check(victim.ID, nil); err != nil {
			t.Fatalf("Check without a chain: %v", err)
		}
		// While the feed is down the CRL is fetched again.
		testwait.Eventually(t, func() bool { return fetches.Load() >= 2 }, "the CRL was not refetched while the feed was down")
	})
	t.Run("signed by another CA", func(t *testing.T) {
		other := testca.New(t)
		srv, fetches := crlServer(t, other, victim.Leaf().SerialNumber)
		w := &revocation.Watcher{CAURLs: []string{srv.URL}, Source: src, CRLInterval: 100 * time.Millisecond}
		stop := run(w)
		testwait.Eventually(t, func() bool { return fetches.Load() >= 2 }, "the CRL was never fetched")
		stop()
		if w.Revoked(serialOf(victim.Leaf())) {
			t.Fatal("a CRL signed by another CA was believed")
		}
	})
	t.Run("no CA address", func(t *testing.T) {
		w := &revocation.Watcher{Source: src}
		if err := w.Run(context.Background()); err == nil {
			t.Fatal("Run without a CA address did not fail")
		}
	})
}

// TestWatcherForgetsExpired: revocations of certificates that have expired
// anyway are forgotten as the set grows; live ones are kept.
func TestWatcherForgetsExpired(t *testing.T) {
	t.Parallel()
	c := testca.New(t)
	src := proxySource(t, c, nil)
	var body strings.Builder
	past, future := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	for i := 1; i <= 300; i++ {
		na := past
		if i%10 == 0 {
			na = future
		}
		fmt.Fprintf(&body, "{\"seq\":%d,\"serial\":\"%x\",\"not_after\":%q}\n", i, 0x1000+i, na)
	}
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/revocations" {
			http.NotFound(w, r)
			return
		}
		if served.Add(1) == 1 {
			w.Write([]byte(body.String()))
			return
		}
		<-r.Context().Done()
	}))
	defer srv.Close()
	var told atomic.Int64
	w := &revocation.Watcher{CAURLs: []string{srv.URL}, Source: src, CRLInterval: time.Millisecond, OnRevoke: func(revocation.Event) { told.Add(1) }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	testwait.Eventually(t, func() bool { return served.Load() >= 2 }, "the watcher did not come back for more")
	cancel()
	<-done
	if told.Load() != 300 {
		t.Fatalf("told of %d revocations, want 300", told.Load())
	}
	for i := 1; i <= 300; i++ {
		s := fmt.Sprintf("%x", 0x1000+i)
		if i%10 == 0 && !w.Revoked(s) {
			t.Fatalf("unexpired %s forgotten", s)
		}
		if i <= 256 && i%10 != 0 && w.Revoked(s) {
			t.Fatalf("expired %s kept past the 256th entry", s)
		}
	}
}

// signedCRL is a CRL signed by c's issuing CA with the given number and
// nextUpdate, revoking serials.
func signedCRL(t testing.TB, c *testca.CA, number int64, next time.Time, serials ...*big.Int) []byte {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now().Add(-time.Minute), ReasonCode: 1})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(number), ThisUpdate: next.Add(-time.Hour),
		NextUpdate: next, RevokedCertificateEntries: entries}, c.Issuer.Cert, c.Issuer.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// crlReplayer serves, as the CA's CRL endpoint, whatever signed CRL the
// test (the attacker) sets; the feed is always down. fetched counts CRL
// requests.
type crlReplayer struct {
	srv     *httptest.Server
	mu      sync.Mutex
	der     []byte
	fetched atomic.Int64
}

func newCRLReplayer(t testing.TB) *crlReplayer {
	r := &crlReplayer{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !strings.HasPrefix(req.URL.Path, "/crl/") {
			http.Error(w, "no feed here", http.StatusServiceUnavailable)
			return
		}
		r.mu.Lock()
		der := r.der
		r.mu.Unlock()
		r.fetched.Add(1)
		if der == nil {
			http.Error(w, "CA down", http.StatusServiceUnavailable)
			return
		}
		w.Write(der)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *crlReplayer) serve(der []byte) {
	r.mu.Lock()
	r.der = der
	r.mu.Unlock()
}

// fetchedMore waits until the watcher has fetched the CRL n more times.
func (r *crlReplayer) fetchedMore(t testing.TB, n int64) {
	t.Helper()
	base := r.fetched.Load()
	testwait.Eventually(t, func() bool { return r.fetched.Load() >= base+n }, "the watcher stopped fetching the CRL")
}

// TestWatcherRefusesStaleAndReplayedCRLs attacks the watcher's CRL
// fallback as someone who can answer for the CA's CRL endpoint (a plain
// HTTP listener): with correctly signed CRLs that are past their
// nextUpdate, or older (lower numbered) than one already seen. Neither may
// be believed to be current, and once the last good CRL passes its
// nextUpdate with no fresh one, Check refuses every peer (fails closed).
func TestWatcherRefusesStaleAndReplayedCRLs(t *testing.T) {
	t.Parallel()
	c := testca.New(t)
	src := proxySource(t, c, nil)
	good, victim := c.Leaf(t, "spiffe://example.org/ns/prod/good"), c.Leaf(t, "spiffe://example.org/ns/prod/victim")
	// The watcher's clock starts at the real time and moves only when a
	// test moves it past a CRL's nextUpdate.
	clk := testclock.New(time.Now())
	start := func(t *testing.T, r *crlReplayer) *revocation.Watcher {
		clk.Set(time.Now())
		w := &revocation.Watcher{CAURLs: []string{r.srv.URL}, Source: src, CRLInterval: 20 * time.Millisecond, Now: clk.Now}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); w.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		return w
	}
	unknown := func(t *testing.T, w *revocation.Watcher, what string) {
		t.Helper()
		err := w.Check(good.ID, good.Chain)
		var pe *tlsconfig.PeerError
		if !errors.As(err, &pe) || pe.Reason != tlsconfig.ReasonRevocationUnknown || !errors.Is(err, revocation.ErrStale) {
			t.Fatalf("BUG: %s: Check of a good certificate = %v; want it refused as revocation status unknown", what, err)
		}
	}

	t.Run("no CRL yet", func(t *testing.T) {
		r := newCRLReplayer(t)
		w := start(t, r)
		r.fetchedMore(t, 2)
		unknown(t, w, "before any CRL")
	})

	t.Run("stale CRL", func(t *testing.T) {
		r := newCRLReplayer(t)
		r.serve(signedCRL(t, c, 5, time.Now().Add(-time.Minute)))
		w := start(t, r)
		r.fetchedMore(t, 2)
		if w.CRLNumber() != nil {
			t.Fatalf("BUG: a CRL past its nextUpdate was accepted (number %v)", w.CRLNumber())
		}
		unknown(t, w, "only a stale CRL served")
	})

	t.Run("expires without a fresh one", func(t *testing.T) {
		r := newCRLReplayer(t)
		next := time.Now().Add(time.Hour)
		r.serve(signedCRL(t, c, 7, next))
		w := start(t, r)
		testwait.Eventually(t, func() bool { return w.CRLNumber() != nil }, "the fresh CRL was not accepted")
		if err := w.Check(good.ID, good.Chain); err != nil {
			t.Fatalf("Check with a current CRL: %v", err)
		}
		// The CA stops answering; the same CRL keeps being served by a
		// cache until it expires.
		clk.Set(next.Add(time.Second))
		r.fetchedMore(t, 2)
		unknown(t, w, "the last CRL expired")
	})

	t.Run("rollback", func(t *testing.T) {
		r := newCRLReplayer(t)
		next := time.Now().Add(time.Hour)
		r.serve(signedCRL(t, c, 100, next, victim.Leaf().SerialNumber))
		w := start(t, r)
		testwait.Eventually(t, func() bool { return w.CRLNumber() != nil }, "CRL 100 was not accepted")
		// The attacker now replays CRL 99: correctly signed, valid for an
		// hour past CRL 100, and without the victim.
		r.serve(signedCRL(t, c, 99, next.Add(time.Hour)))
		r.fetchedMore(t, 3)
		if n := w.CRLNumber(); n.Int64() != 100 {
			t.Fatalf("BUG: the watcher went back to CRL number %v", n)
		}
		if !w.Revoked(serialOf(victim.Leaf())) {
			t.Fatal("BUG: the victim's revocation was forgotten")
		}
		// CRL 99's hour of validity must not keep the watcher current.
		clk.Set(next.Add(time.Second))
		r.fetchedMore(t, 2)
		unknown(t, w, "only an older CRL served after the newest expired")
		// A newer CRL is taken again.
		r.serve(signedCRL(t, c, 101, next.Add(2*time.Hour)))
		testwait.Eventually(t, func() bool { n := w.CRLNumber(); return n != nil && n.Int64() == 101 }, "CRL 101 was not accepted")
		if err := w.Check(good.ID, good.Chain); err != nil {
			t.Fatalf("Check with a current CRL: %v", err)
		}
	})
}

// TestSourceFromCertificate: the revocation source a proxy finds in its
// own certificate: an https address is the CA's API (feed and CRL), a
// plain http one the CRL alone.
func TestSourceFromCertificate(t *testing.T) {
	c := testca.New(t)
	kid := revocation.IssuerKeyID(c.Issuer.Cert)
	for _, tt := range []struct {
		name      string
		crl, ocsp []string
		ca        string
		crlURL    string
	}{
		{"https CRL", []string{"https://ca.example:8443/crl/" + kid + ".crl"}, nil, "https://ca.example:8443", ""},
		{"http CRL", []string{"http://ca.example:8080/crl/" + kid + ".crl"}, []string{"http://ca.example:8080/ocsp"}, "", "http://ca.example:8080/crl/" + kid + ".crl"},
		{"https OCSP only", nil, []string{"https://ca.example:8443/ocsp"}, "https://ca.example:8443", ""},
		{"http OCSP only", nil, []string{"http://ca.example:8080/ocsp"}, "", "http://ca.example:8080/crl/" + kid + ".crl"},
		{"ldap only", []string{"ldap://dir.example/cn=crl"}, nil, "", ""},
		{"none", nil, nil, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			leaf := &x509.Certificate{CRLDistributionPoints: tt.crl, OCSPServer: tt.ocsp}
			cas, crl := revocation.SourceFromCertificate(leaf, c.Issuer.Cert)
			if strings.Join(cas, ",") != tt.ca || crl != tt.crlURL {
				t.Errorf("SourceFromCertificate = %q, %q; want %q, %q", cas, crl, tt.ca, tt.crlURL)
			}
		})
	}
}

// TestWatcherFollowsCRLAlone: a watcher that knows only a CRL distribution
// point fetches it at start and then once per tick of its loop, learning
// the revocations it lists.
func TestWatcherFollowsCRLAlone(t *testing.T) {
	t.Parallel()
	c := testca.New(t)
	src := proxySource(t, c, nil)
	victim := c.Leaf(t, "spiffe://example.org/ns/prod/victim")
	srv, fetches := crlServer(t, c, victim.Leaf().SerialNumber)
	w := &revocation.Watcher{CRLURL: srv.URL + "/crl/issuer.crl", Source: src}
	ticks := make(chan time.Time)
	revocation.SetCRLTicks(w, ticks)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	// An unbuffered send returns once the loop has finished the poll of the
	// tick before: after three ticks, two polls are done.
	for range 3 {
		ticks <- time.Time{}
	}
	n := fetches.Load()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n < 3 {
		t.Fatalf("the CRL was fetched %d times after two ticks' polls; want 3: at start and once per tick", n)
	}
	if !w.Revoked(serialOf(victim.Leaf())) {
		t.Fatal("the CRL's revocation was not learnt")
	}
}
