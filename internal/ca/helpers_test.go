package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/policy"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/testca"
)

// env is an Authority over a fresh test CA and a real SQLite store in a
// temporary directory, with a clock the test moves (whole seconds, as
// certificates carry them).
type env struct {
	ca      *testca.CA
	a       *ca.Authority
	db      *store.DB
	now     time.Time
	admin   spiffeid.ID
	revoked []string // serials OnRevoke heard of
}

const (
	crlURL  = "http://ca.example.org/crl/x.crl"
	ocspURL = "http://ca.example.org/ocsp"
)

func newEnv(t *testing.T) *env {
	t.Helper()
	c := testca.New(t)
	db, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "mutual.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e := &env{ca: c, db: db, now: time.Now().Truncate(time.Second), admin: spiffeid.RequireFromString("spiffe://example.org/admin/alice")}
	e.a = &ca.Authority{
		Issuer: c.Issuer,
		Roots:  []*x509.Certificate{c.Root},
		Policy: &policy.Policy{TrustDomain: c.TrustDomain, DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour, MaxTokenTTL: 7 * 24 * time.Hour},
		Store:  db,
		URLs:   []string{"https://ca.example.org:8443"},
		Now:    func() time.Time { return e.now },
		CRLURL: crlURL, OCSPURL: ocspURL,
		OnRevoke: func(serial string) { e.revoked = append(e.revoked, serial) },
	}
	return e
}

// csr makes a key and a PEM certificate request for it, with tmpl's names.
func csr(t *testing.T, tmpl x509.CertificateRequest) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, pki.EncodeCSR(der)
}

// token makes a join token for r as the admin.
func (e *env) token(t *testing.T, r ca.TokenRequest) string {
	t.Helper()
	tok, _, err := e.a.CreateToken(context.Background(), e.admin, r)
	if err != nil {
		t.Fatalf("CreateToken(%+v): %v", r, err)
	}
	return tok
}

// enroll enrolls id with a fresh token and key.
func (e *env) enroll(t *testing.T, id string) *ca.Issued {
	t.Helper()
	_, req := csr(t, x509.CertificateRequest{})
	is, err := e.a.Enroll(context.Background(), e.token(t, ca.TokenRequest{ID: id}), req, 0)
	if err != nil {
		t.Fatalf("Enroll %s: %v", id, err)
	}
	return is
}

// wantCode fails the test unless err is a *ca.Error of kind and code.
func wantCode(t *testing.T, err error, kind ca.Kind, code string) {
	t.Helper()
	var ce *ca.Error
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v (%T), want a *ca.Error with code %q", err, err, code)
	}
	if ce.Kind != kind || ce.Code != code {
		t.Fatalf("err = %q (kind %d, code %q), want kind %d, code %q", ce.Msg, ce.Kind, ce.Code, kind, code)
	}
	if ce.Msg == "" {
		t.Errorf("code %q with no message", code)
	}
}

// leaf is the certificate is answers, parsed.
func leaf(t *testing.T, is *ca.Issued) *x509.Certificate {
	t.Helper()
	c, err := is.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// chain is the chain is answers: its certificate, then the intermediates.
func chain(t *testing.T, is *ca.Issued) []*x509.Certificate {
	t.Helper()
	return append([]*x509.Certificate{leaf(t, is)}, is.Intermediates...)
}
