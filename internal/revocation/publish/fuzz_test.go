package publish_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/revocation/publish"
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
	r, err := publish.NewResponder(c.Issuer, st, nil)
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
