package revocation_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/testca"
)

// memStore is a fixture: the certificates an OCSP responder looks up, in
// memory. Serial "dead" fails like an unreachable database.
type memStore struct {
	mu    sync.Mutex
	certs map[string]store.Certificate
}

func (m *memStore) GetCertificate(_ context.Context, serial string) (store.Certificate, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if serial == "dead" {
		return store.Certificate{}, errors.New("database unreachable")
	}
	c, ok := m.certs[serial]
	if !ok {
		return c, fmt.Errorf("certificate %s: %w", serial, store.ErrNotFound)
	}
	return c, nil
}

// FuzzOCSPRequest: whatever bytes arrive, Respond never panics and always
// answers something ocsp.ParseResponse reads: malformedRequest for what is
// not an OCSP request, unauthorized for another issuer, and otherwise a
// response signed for the issuer about the serial asked, with the store's
// status.
func FuzzOCSPRequest(f *testing.F) {
	c := testca.New(f)
	good := c.Leaf(f, "spiffe://example.org/ns/prod/web").Leaf()
	revoked := c.Leaf(f, "spiffe://example.org/ns/prod/gone").Leaf()
	revokedAt := time.Now().Add(-time.Minute).Truncate(time.Second)
	st := &memStore{certs: map[string]store.Certificate{
		serialOf(good):    {Serial: serialOf(good), SPIFFEID: "spiffe://example.org/ns/prod/web", NotAfter: good.NotAfter},
		serialOf(revoked): {Serial: serialOf(revoked), SPIFFEID: "spiffe://example.org/ns/prod/gone", NotAfter: revoked.NotAfter, RevokedAt: revokedAt, RevocationReason: ocsp.KeyCompromise},
	}}
	r, err := revocation.NewResponder(c.Issuer, st, nil)
	if err != nil {
		f.Fatal(err)
	}
	// Valid requests, made now.
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		for _, leaf := range []*x509.Certificate{good, revoked} {
			req, err := ocsp.CreateRequest(leaf, c.Intermediate, &ocsp.RequestOptions{Hash: h})
			if err != nil {
				f.Fatal(err)
			}
			f.Add(req)
		}
	}
	f.Add(unknownSerialRequest(f, c.Intermediate, big.NewInt(42), crypto.SHA1))
	f.Add(unknownSerialRequest(f, c.Intermediate, big.NewInt(0xdead), crypto.SHA1)) // the store fails: tryLater
	f.Add(unknownSerialRequest(f, c.Intermediate, big.NewInt(-42), crypto.SHA256))
	f.Add(unknownSerialRequest(f, c.Intermediate, new(big.Int).Lsh(big.NewInt(1), 4000), crypto.SHA1))
	other := testca.New(f)
	foreign := other.Leaf(f, "spiffe://example.org/ns/prod/web")
	freq, _ := ocsp.CreateRequest(foreign.Leaf(), foreign.Chain[1], nil)
	f.Add(freq)
	f.Add([]byte{})

	ours := hashesOf(f, c.Intermediate)
	f.Fuzz(func(t *testing.T, req []byte) {
		out := r.Respond(context.Background(), req)
		if len(out) == 0 {
			t.Fatal("empty answer")
		}
		resp, err := ocsp.ParseResponse(out, c.Intermediate)
		parsed, perr := ocsp.ParseRequest(req)
		if perr != nil || parsed.SerialNumber == nil {
			if !bytes.Equal(out, ocsp.MalformedRequestErrorResponse) {
				t.Fatalf("request that does not parse (%v) answered %x, want malformedRequest", perr, out)
			}
			return
		}
		var re ocsp.ResponseError
		if errors.As(err, &re) {
			switch re.Status {
			case ocsp.Unauthorized:
				if ours.names(parsed) {
					t.Fatalf("a request about this issuer was answered unauthorized")
				}
			case ocsp.TryLater:
				if pki.FormatSerial(parsed.SerialNumber) != "dead" {
					t.Fatalf("tryLater for %x", parsed.SerialNumber)
				}
			default:
				t.Fatalf("parsed request answered with error status %v", re.Status)
			}
			return
		}
		if err != nil {
			t.Fatalf("answer does not parse: %v (%x)", err, out)
		}
		if !ours.names(parsed) {
			t.Fatal("a request about another issuer got a signed answer")
		}
		if resp.SerialNumber.Cmp(parsed.SerialNumber) != 0 || resp.IssuerHash != parsed.HashAlgorithm {
			t.Fatalf("answer about %x (%v), asked about %x (%v)", resp.SerialNumber, resp.IssuerHash, parsed.SerialNumber, parsed.HashAlgorithm)
		}
		want := ocsp.Unknown
		switch parsed.SerialNumber.Cmp(good.SerialNumber) {
		case 0:
			want = ocsp.Good
		}
		if parsed.SerialNumber.Cmp(revoked.SerialNumber) == 0 {
			want = ocsp.Revoked
			if !resp.RevokedAt.Equal(revokedAt) || resp.RevocationReason != ocsp.KeyCompromise {
				t.Fatalf("revoked at %s reason %d", resp.RevokedAt, resp.RevocationReason)
			}
		}
		if resp.Status != want {
			t.Fatalf("status %d for %x, want %d", resp.Status, parsed.SerialNumber, want)
		}
	})
}

// issuerHashes are the name and key hashes naming an issuer, per hash.
type issuerHashes map[crypto.Hash]*ocsp.Request

func hashesOf(t testing.TB, issuer *x509.Certificate) issuerHashes {
	out := issuerHashes{}
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		r, err := ocsp.ParseRequest(unknownSerialRequest(t, issuer, big.NewInt(1), h))
		if err != nil {
			t.Fatal(err)
		}
		out[h] = r
	}
	return out
}

// names: the request names this issuer.
func (ih issuerHashes) names(req *ocsp.Request) bool {
	w, ok := ih[req.HashAlgorithm]
	return ok && bytes.Equal(w.IssuerNameHash, req.IssuerNameHash) && bytes.Equal(w.IssuerKeyHash, req.IssuerKeyHash)
}

// FuzzFeedLine: the watcher reads whatever a (broken or hostile) feed
// streams without panicking, learns the revocations on the lines it
// accepted, tells its owner once per serial, and reconnects.
func FuzzFeedLine(f *testing.F) {
	c := testca.New(f)
	dir := filepath.Join(f.TempDir(), "id")
	if err := c.Leaf(f, "spiffe://example.org/ns/prod/proxy").Save(dir); err != nil {
		f.Fatal(err)
	}
	src, err := identity.NewDirSource(dir)
	if err != nil {
		f.Fatal(err)
	}
	line := func(e revocation.Event) []byte { b, _ := json.Marshal(e); return b }
	now := time.Now().UTC().Truncate(time.Second)
	f.Add(append(append(line(revocation.Event{Seq: 1, Serial: "ab", SPIFFEID: "spiffe://example.org/x", Reason: 1, RevokedAt: now, NotAfter: now.Add(time.Hour)}), '\n'),
		append(line(revocation.Event{Seq: 1, Heartbeat: true}), '\n')...))
	f.Add([]byte("{\"seq\":2,\"serial\":\"cd\"}\n{\"seq\":3,\"serial\":\"cd\"}\n{\"seq\":3,\"heartbeat\":true}\n"))
	f.Add([]byte("not json\n{\"seq\":4,\"serial\":\"ef\"}\n"))
	f.Add([]byte("{\"seq\":-1,\"serial\":\"\"}\n{\"seq\":9223372036854775807,\"serial\":\"01\"}\n"))
	f.Add([]byte("{\"seq\":1,\"serial\":\"ab\",\"revoked_at\":\"yesterday\"}\n"))
	f.Add([]byte("{\"seq\":1,\"serial\":\"ab\",\"not_after\":\"2000-01-01T00:00:00Z\"}\n"))
	f.Add(bytes.Repeat([]byte("a"), 70<<10))
	f.Add([]byte("\n\n\r\n{}\n[]\nnull\n"))

	f.Fuzz(func(t *testing.T, body []byte) {
		// What the watcher should accept: the lines before the first it
		// cannot read, as it reads them.
		learnt := map[string]bool{}
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(make([]byte, 4096), 64<<10)
		for sc.Scan() {
			var e revocation.Event
			if json.Unmarshal(sc.Bytes(), &e) != nil {
				break
			}
			if !e.Heartbeat {
				learnt[e.Serial] = true
			}
		}

		var requests atomic.Int64
		secondAsk := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v1/revocations" {
				http.NotFound(w, r)
				return
			}
			if requests.Add(1) > 1 {
				// The watcher came back: it has finished with the body.
				select {
				case <-secondAsk:
				default:
					close(secondAsk)
				}
				http.Error(w, "gone", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.Write(body)
		}))
		defer srv.Close()

		var mu sync.Mutex
		told := map[string]int{}
		w := &revocation.Watcher{CAURLs: []string{srv.URL}, Source: src, CRLInterval: time.Millisecond,
			OnRevoke: func(e revocation.Event) { mu.Lock(); told[e.Serial]++; mu.Unlock() }}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		select {
		case <-secondAsk:
		case <-time.After(10 * time.Second):
			cancel()
			t.Fatal("the watcher did not come back after the feed ended")
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		for s := range learnt {
			if told[s] != 1 {
				t.Fatalf("serial %q told %d times, want once", s, told[s])
			}
		}
		for s, n := range told {
			if !learnt[s] {
				t.Fatalf("serial %q told %d times but not on an accepted line", s, n)
			}
		}
		if len(learnt) < 255 {
			// (Pruning of expired entries starts at 256.)
			for s := range learnt {
				if !w.Revoked(s) {
					t.Fatalf("serial %q accepted but not revoked", s)
				}
			}
		}
	})
}
