package federation_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	gofed "github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/federation"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/testca"
)

var partner = spiffeid.RequireTrustDomainFromString("partner.example")

// endpoint is a foreign bundle endpoint served by go-spiffe's own
// federation handler; the bundle it serves can be swapped, or replaced by
// raw bytes.
type endpoint struct {
	mu     sync.Mutex
	bundle *spiffebundle.Bundle
	raw    []byte
	srv    *httptest.Server
}

func (e *endpoint) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.bundle.GetBundleForTrustDomain(td)
}

func (e *endpoint) serve(b *spiffebundle.Bundle, raw []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.bundle, e.raw = b, raw
}

func newEndpoint(t *testing.T) *endpoint {
	e := &endpoint{}
	h, err := gofed.NewHandler(partner, e)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		raw := e.raw
		e.mu.Unlock()
		if string(raw) == "404" {
			http.NotFound(w, r)
			return
		}
		if raw != nil {
			w.Write(raw)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func bundleOf(seq uint64, certs ...*x509.Certificate) *spiffebundle.Bundle {
	b := spiffebundle.FromX509Authorities(partner, certs)
	b.SetSequenceNumber(seq)
	b.SetRefreshHint(time.Minute)
	return b
}

// caNamed is a self-signed CA certificate whose SPIFFE ID is id.
func caNamed(t *testing.T, id string) *x509.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: id}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func openStore(t *testing.T) *store.DB {
	db, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "mutual.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestRefreshKeepsLastGood: a good bundle is stored; every bad one after it
// (rollback, other keys under the same sequence, empty, an authority of
// another domain, this CA's own root, malformed, an endpoint that fails
// authentication) is refused with an error naming why, and the last good
// bundle stays.
func TestRefreshKeepsLastGood(t *testing.T) {
	ctx := context.Background()
	local := testca.New(t, testca.WithTrustDomain("home.example"))
	p1, p2 := testca.New(t, testca.WithTrustDomain("partner.example")), testca.New(t, testca.WithTrustDomain("partner.example"))
	ep := newEndpoint(t)
	db := openStore(t)
	r := &federation.Refresher{Store: db, TrustDomain: local.TrustDomain, Roots: []*x509.Certificate{local.Root}}
	f := store.Federation{TrustDomain: "partner.example", EndpointURL: ep.srv.URL, Profile: federation.ProfileWeb,
		WebRootsPEM: string(pki.EncodeCertificates(ep.srv.Certificate())), CreatedAt: time.Now(), CreatedBy: "test"}
	if err := db.CreateFederation(ctx, f, nil); err != nil {
		t.Fatal(err)
	}
	lastError := func() string {
		fs, err := db.ListFederations(ctx)
		if err != nil || len(fs) != 1 {
			t.Fatalf("list: %v %v", fs, err)
		}
		return fs[0].LastError
	}

	ep.serve(bundleOf(2, p1.Root), nil)
	if next := r.Refresh(ctx, f); next != time.Minute || lastError() != "" {
		t.Fatalf("good bundle: next fetch in %v, error %q; want the 1m hint and no error", next, lastError())
	}
	good, err := db.GetBundle(ctx, "partner.example")
	if err != nil || good.Sequence != 2 || good.Fingerprints[0] != federation.Fingerprint(p1.Root) {
		t.Fatalf("stored %+v (%v)", good, err)
	}

	for _, c := range []struct {
		name, want string
		bundle     *spiffebundle.Bundle
		raw        []byte
		web        string
	}{
		{name: "rollback", want: "rollback", bundle: bundleOf(1, p2.Root)},
		{name: "same sequence, other keys", want: "same sequence", bundle: bundleOf(2, p2.Root)},
		{name: "empty", want: "no authorities", bundle: bundleOf(3)},
		{name: "authority of another domain", want: "belongs to other.example", bundle: bundleOf(3, caNamed(t, "spiffe://other.example"))},
		{name: "this CA's root", want: "own root", bundle: bundleOf(3, local.Root)},
		{name: "malformed", want: "spiffebundle", raw: []byte(`{"keys": [{"use": "x509-svid", "kty": "EC"`)},
		{name: "no sequence", want: "no spiffe_sequence", bundle: spiffebundle.FromX509Authorities(partner, []*x509.Certificate{p2.Root})},
		{name: "oversize", want: "larger than", raw: append(bytes.Repeat([]byte(" "), federation.MaxBundleSize), '{')},
		{name: "not found", want: "HTTP 404", raw: []byte("404")},
		{name: "endpoint fails authentication", want: "certificate", bundle: bundleOf(3, p2.Root), web: string(pki.EncodeCertificates(p2.Root))},
	} {
		t.Run(c.name, func(t *testing.T) {
			ep.serve(c.bundle, c.raw)
			fc := f
			if c.web != "" {
				fc.WebRootsPEM = c.web
			}
			r.Refresh(ctx, fc)
			if msg := lastError(); !strings.Contains(msg, c.want) {
				t.Errorf("last error %q, want it to say %q", msg, c.want)
			}
			held, err := db.GetBundle(ctx, "partner.example")
			if err != nil || held.Sequence != good.Sequence || held.X509AuthoritiesPEM != good.X509AuthoritiesPEM {
				t.Errorf("after a refused bundle, held %+v (%v), want the last good one", held, err)
			}
		})
	}

	// A newer sequence with a rotated root is taken, recording both keys.
	ep.serve(bundleOf(3, p1.Root, p2.Root), nil)
	r.Refresh(ctx, f)
	changes, err := db.ListBundleChanges(ctx, "partner.example")
	if err != nil {
		t.Fatal(err)
	}
	last := changes[len(changes)-1]
	if len(changes) != 3 || last.Sequence != 3 || len(last.Added) != 1 || last.Added[0] != federation.Fingerprint(p2.Root) || len(last.Removed) != 0 {
		t.Errorf("changes %+v, want federation added, then sequences 2 and 3 (adding p2's root)", changes)
	}
}

// TestRunFollowsTheRefreshHint: Run fetches a new relationship when woken,
// and again once the clock passes the bundle's refresh hint.
func TestRunFollowsTheRefreshHint(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	local := testca.New(t, testca.WithTrustDomain("home.example"))
	p1 := testca.New(t, testca.WithTrustDomain("partner.example"))
	ep := newEndpoint(t)
	db := openStore(t)
	clock := federation.NewManualClock(time.Now())
	r := &federation.Refresher{Store: db, TrustDomain: local.TrustDomain, Roots: []*x509.Certificate{local.Root}, Clock: clock}
	r.Init()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	ep.serve(bundleOf(1, p1.Root), nil)
	if err := db.CreateFederation(ctx, store.Federation{TrustDomain: "partner.example", EndpointURL: ep.srv.URL, Profile: federation.ProfileWeb,
		WebRootsPEM: string(pki.EncodeCertificates(ep.srv.Certificate())), CreatedAt: time.Now(), CreatedBy: "test"}, nil); err != nil {
		t.Fatal(err)
	}
	r.Wake()
	waitSequence(t, db, 1, func() {})
	ep.serve(bundleOf(2, p1.Root), nil)
	// Time moves on (a minute per look) until the next fetch, due after the
	// 1m refresh hint, has stored sequence 2.
	waitSequence(t, db, 2, func() { clock.Advance(time.Minute) })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func waitSequence(t *testing.T, db *store.DB, seq int64, step func()) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := db.GetBundle(context.Background(), "partner.example")
		if err == nil && b.Sequence == seq {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("bundle sequence %d never held: %+v (%v)", seq, b, err)
		}
		step()
		time.Sleep(10 * time.Millisecond)
	}
}

// TestParse reads a bundle exchanged out of band as SPIFFE JSON or PEM,
// and refuses anything else.
func TestParse(t *testing.T) {
	p1 := testca.New(t, testca.WithTrustDomain("partner.example"))
	js, err := bundleOf(4, p1.Root).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"json": js, "pem": pki.EncodeCertificates(p1.Root)} {
		b, err := federation.Parse(partner, data)
		if err != nil || len(b.X509Authorities()) != 1 || !b.X509Authorities()[0].Equal(p1.Root) {
			t.Errorf("%s: %v, %v", name, b, err)
		}
	}
	if _, err := federation.Parse(partner, []byte("hello")); err == nil {
		t.Error("Parse accepted neither JSON nor PEM")
	}
	if err := federation.Check(partner, nil, bundleOf(1, p1.Root)); !errors.Is(err, federation.ErrRefused) {
		t.Errorf("Check of a bundle for the local trust domain = %v, want ErrRefused", err)
	}
}
