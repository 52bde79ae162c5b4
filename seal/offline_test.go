package seal_test

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
	"testing"
	"time"

	"github.com/mutual-tls/mutual/seal"
)

func selfSigned(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "r"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// TestOffline: a file sealed offline to a certificate opens with its key
// only, and an edited policy breaks it.
func TestOffline(t *testing.T) {
	cert, key := selfSigned(t)
	other, otherKey := selfSigned(t)
	var sealed bytes.Buffer
	if err := seal.Seal(context.Background(), &sealed, bytes.NewReader([]byte("handoff")), webPolicy, seal.CertWrapper{Cert: cert}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := seal.Unseal(context.Background(), &out, bytes.NewReader(sealed.Bytes()), seal.KeyUnwrapper{Cert: cert, Key: key}); err != nil || out.String() != "handoff" {
		t.Fatalf("unseal = %q, %v", out.String(), err)
	}
	err := seal.Unseal(context.Background(), &out, bytes.NewReader(sealed.Bytes()), seal.KeyUnwrapper{Cert: other, Key: otherKey})
	if !errors.Is(err, seal.ErrNotForThisKey) {
		t.Fatalf("another key: %v, want ErrNotForThisKey", err)
	}
	edited := bytes.Replace(sealed.Bytes(), []byte("ns/prod/web"), []byte("ns/prod/api"), 1)
	if err := seal.Unseal(context.Background(), &out, bytes.NewReader(edited), seal.KeyUnwrapper{Cert: cert, Key: key}); !errors.Is(err, seal.ErrTampered) {
		t.Fatalf("edited policy: %v, want ErrTampered", err)
	}
}
