package ca_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"testing"

	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/translog"
)

// rotate gives e's CA a new intermediate (pki.RotateIntermediate) and moves
// the Authority to it as a restarted service does: the new one issues, the
// old one is retired. It returns the old intermediate.
func (e *env) rotate(t *testing.T) *x509.Certificate {
	t.Helper()
	rot, err := pki.RotateIntermediate(context.Background(), pki.RotateOptions{Dir: e.ca.Dir, Passphrase: []byte(testca.Passphrase), Iterations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.LoadCA(e.ca.Dir, []byte(testca.Passphrase))
	if err != nil {
		t.Fatal(err)
	}
	e.a.Issuer = c.Issuer
	e.a.Retired = nil
	for _, is := range c.Retired {
		e.a.Retired = append(e.a.Retired, is.Cert)
	}
	return rot.Old
}

// TestReplayAfterRotation: an enrollment replayed (its answer lost) after an
// intermediate rotation gets its certificate with the chain of the
// intermediate that signed it, not of the one issuing now.
func TestReplayAfterRotation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tok := e.token(t, ca.TokenRequest{ID: "spiffe://example.org/web"})
	_, req := csr(t, x509.CertificateRequest{})
	first, err := e.a.Enroll(ctx, tok, req, 0)
	if err != nil {
		t.Fatal(err)
	}
	old := e.rotate(t)
	again, err := e.a.Enroll(ctx, tok, req, 0)
	if err != nil {
		t.Fatalf("replay after the rotation: %v", err)
	}
	if !bytes.Equal(again.DER, first.DER) {
		t.Fatal("the replay answered another certificate")
	}
	replayed := chain(t, again)
	if len(replayed) != 2 || !replayed[1].Equal(old) {
		t.Fatalf("the replay's chain ends with %q, want the intermediate that signed it, %q", replayed[len(replayed)-1].Subject.CommonName, old.Subject.CommonName)
	}
	if _, err := pki.VerifyChain(replayed, again.Roots, e.now, x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatalf("the replayed chain does not verify: %v", err)
	}
	// New issuance is under the new intermediate.
	if is := e.enroll(t, "spiffe://example.org/api"); !is.Intermediates[0].Equal(e.a.Issuer.Cert) {
		t.Fatal("issued after the rotation by another intermediate than the current one")
	}
}

// TestImportAfterRotation: a certificate of a retired intermediate (the
// operator identity ca init made, say) is still imported; one of another
// CA is not.
func TestImportAfterRotation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	before := e.ca.Leaf(t, "spiffe://example.org/admin/bob")
	e.rotate(t)
	if err := e.a.Import(ctx, before.Leaf(), translog.CARequester("admin")); err != nil {
		t.Fatalf("import of a certificate of the retired intermediate: %v", err)
	}
	if _, err := e.db.GetCertificate(ctx, pki.FormatSerial(before.Leaf().SerialNumber)); err != nil {
		t.Fatalf("imported certificate not stored: %v", err)
	}
	stranger := testca.New(t).Leaf(t, "spiffe://example.org/admin/eve")
	if err := e.a.Import(ctx, stranger.Leaf(), translog.CARequester("admin")); err == nil {
		t.Fatal("imported a certificate of another CA")
	}
}
