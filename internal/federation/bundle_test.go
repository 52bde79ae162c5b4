package federation_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"

	"github.com/mutual-tls/mutual/internal/federation"
	"github.com/mutual-tls/mutual/internal/testca"
)

// TestStoreKeepsJWTAuthorities: a foreign SPIFFE bundle's JWT authorities
// are stored with its X.509 ones and come back from the store unchanged;
// the change record names them (jwt:KID:SHA256), so that a key replaced
// under a new sequence shows as removed and added.
func TestStoreKeepsJWTAuthorities(t *testing.T) {
	ctx := context.Background()
	db := openStore(t)
	ca := testca.New(t, testca.WithTrustDomain("partner.example"))
	bundle := func(seq uint64) *spiffebundle.Bundle {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		b := spiffebundle.FromX509Authorities(partner, []*x509.Certificate{ca.Root})
		if err := b.AddJWTAuthority("k1", key.Public()); err != nil {
			t.Fatal(err)
		}
		b.SetSequenceNumber(seq)
		return b
	}
	first := bundle(1)
	if _, err := db.SetBundle(ctx, federation.ToStore(first, "test", time.Now())); err != nil {
		t.Fatal(err)
	}
	sb, err := db.GetBundle(ctx, "partner.example")
	if err != nil {
		t.Fatal(err)
	}
	got, err := federation.FromStore(sb)
	if err != nil {
		t.Fatal(err)
	}
	if !got.JWTBundle().Equal(first.JWTBundle()) || !got.X509Bundle().Equal(first.X509Bundle()) {
		t.Fatalf("the stored bundle lost keys: JWT %v, X.509 %d", got.JWTAuthorities(), len(got.X509Authorities()))
	}

	second := bundle(2) // the same root, another JWT key under the same key ID
	if changed, err := db.SetBundle(ctx, federation.ToStore(second, "test", time.Now())); err != nil || !changed {
		t.Fatalf("a new JWT key under a new sequence: changed %v, %v", changed, err)
	}
	changes, err := db.ListBundleChanges(ctx, "partner.example")
	if err != nil {
		t.Fatal(err)
	}
	last := changes[len(changes)-1]
	if len(last.Added) != 1 || len(last.Removed) != 1 || !strings.HasPrefix(last.Added[0], "jwt:k1:") || last.Added[0] == last.Removed[0] {
		t.Fatalf("the change record of a replaced JWT key: added %v, removed %v", last.Added, last.Removed)
	}
}
