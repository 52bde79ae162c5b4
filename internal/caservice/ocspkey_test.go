package caservice_test

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/keyref"
	"github.com/mutual-tls/mutual/internal/keyref/softhsmtest"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testopenssl"
)

// TestOCSPResponderKeyInToken: with the OCSP responder's key made in a
// SoftHSM2 token (ca init --ocsp-key), every responder certificate, of
// the current intermediate and of one a rotation retired, certifies the
// token's key, and the answers verify with x/crypto/ocsp and openssl ocsp.
func TestOCSPResponderKeyInToken(t *testing.T) {
	tok := softhsmtest.New(t)
	ctx := context.Background()
	dir := initInToken(t, pki.KeyRefs{Intermediate: tok.URI("intermediate")})
	if err := caservice.AddTokenKeys(ctx, dir, pki.KeyRefs{OCSP: tok.URI("ocsp")}); err != nil {
		t.Fatal(err)
	}
	kr := keyref.NewKeyring(keyref.Options{})
	t.Cleanup(func() { kr.Close() })
	tokenKey, err := kr.Open(ctx, tok.URI("ocsp"))
	if err != nil {
		t.Fatal(err)
	}
	svc, _ := run(t, caservice.Options{Dir: dir, Passphrase: []byte(testca.Passphrase), Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0"})
	before := enroll(t, svc, "spiffe://example.org/before")
	if _, err := caservice.RotateIntermediate(ctx, caservice.RotateOptions{Dir: dir, Passphrase: []byte(testca.Passphrase), NewKey: tok.URI("intermediate-2"), Iterations: 1000}); err != nil {
		t.Fatal(err)
	}
	if changed, err := svc.Reload(ctx); err != nil || !changed {
		t.Fatalf("reload after the rotation: changed %v, %v", changed, err)
	}
	after := enroll(t, svc, "spiffe://example.org/after")

	for _, id := range []*identity.Identity{before, after} {
		leaf, issuer := id.Leaf(), id.Chain[len(id.Chain)-1]
		r := ocspAnswer(t, svc, leaf, issuer)
		if r.Status != ocsp.Good || r.Certificate == nil || !pki.PublicKeysEqual(r.Certificate.PublicKey, tokenKey.Public()) {
			t.Fatalf("OCSP about %s: status %d, responder certificate %v not for the token's key", id.ID, r.Status, r.Certificate != nil)
		}
		if err := r.Certificate.CheckSignatureFrom(issuer); err != nil {
			t.Fatalf("the responder certificate is not certified by %s: %v", issuer.Subject.CommonName, err)
		}

		tmp := t.TempDir()
		write := func(name string, certs ...*x509.Certificate) string {
			p := filepath.Join(tmp, name)
			if err := os.WriteFile(p, pki.EncodeCertificates(certs...), 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}
		leafPEM := write("leaf.pem", leaf)
		out, err := testopenssl.Run(t, "ocsp", "-issuer", write("issuer.pem", issuer), "-cert", leafPEM,
			"-url", revocationURL(t, svc, leaf.OCSPServer[0]), "-CAfile", write("bundle.pem", append(id.Roots, issuer)...))
		if err != nil || !strings.Contains(out, "Response verify OK") || !strings.Contains(out, leafPEM+": good") {
			t.Fatalf("openssl ocsp about %s: %v\n%s", id.ID, err, out)
		}
	}
}
