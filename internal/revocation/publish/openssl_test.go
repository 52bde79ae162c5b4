package publish_test

import (
	"context"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/revocation/publish"
	"github.com/mutual-tls/mutual/internal/testca"
)

// TestOpenSSLOCSP: openssl, an independent client, asks the OCSP responder
// named in a real certificate and gets good, then revoked with the reason.
func TestOpenSSLOCSP(t *testing.T) {
	openssl(t)
	t.Parallel()
	e := startCA(t, "")
	id := e.Enroll(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{})
	leaf := id.Leaf()
	if len(leaf.OCSPServer) != 1 || leaf.OCSPServer[0] != e.ocspURL() {
		t.Fatalf("the certificate names OCSP responders %v, want [%s]", leaf.OCSPServer, e.ocspURL())
	}
	dir := t.TempDir()
	leafPEM := writePEM(t, dir, "leaf.pem", leaf)
	interPEM := writePEM(t, dir, "intermediate.pem", e.Intermediate)
	bundlePEM := writePEM(t, dir, "bundle.pem", append(id.Roots, e.Intermediate)...)
	ask := func() string {
		t.Helper()
		out, ok := runOpenSSL(t, "ocsp", "-issuer", interPEM, "-cert", leafPEM, "-url", leaf.OCSPServer[0], "-CAfile", bundlePEM)
		if !ok || !strings.Contains(out, "Response verify OK") {
			t.Fatalf("openssl ocsp failed or did not verify the response:\n%s", out)
		}
		return out
	}
	if out := ask(); !strings.Contains(out, leafPEM+": good") {
		t.Fatalf("openssl ocsp before revocation:\n%s", out)
	}
	e.revoke(t, leaf, "keyCompromise")
	out := ask()
	if !strings.Contains(out, leafPEM+": revoked") || !strings.Contains(out, "Reason: keyCompromise") || !strings.Contains(out, "Revocation Time:") {
		t.Fatalf("openssl ocsp after revocation:\n%s", out)
	}
	t.Logf("openssl ocsp after revocation:\n%s", out)
}

// TestOpenSSLCRL: openssl verify -crl_check with the CRL downloaded from the
// distribution point in the certificate rejects a revoked certificate and
// accepts a good one.
func TestOpenSSLCRL(t *testing.T) {
	openssl(t)
	t.Parallel()
	e := startCA(t, "")
	bad := e.Enroll(t, "spiffe://example.org/ns/prod/stolen", api.TokenRequest{}).Leaf()
	good := e.Enroll(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{}).Leaf()
	if len(bad.CRLDistributionPoints) != 1 || bad.CRLDistributionPoints[0] != e.crlURL() {
		t.Fatalf("the certificate names CRL distribution points %v, want [%s]", bad.CRLDistributionPoints, e.crlURL())
	}
	e.revoke(t, bad, "keyCompromise")

	st, _, der := httpGet(t, bad.CRLDistributionPoints[0])
	if st != http.StatusOK {
		t.Fatalf("CRL: HTTP %d", st)
	}
	dir := t.TempDir()
	crlPEM := writeCRLPEM(t, dir, "crl.pem", der)
	chainPEM := writePEM(t, dir, "chain.pem", e.Root, e.Intermediate)
	badPEM := writePEM(t, dir, "bad.pem", bad)
	goodPEM := writePEM(t, dir, "good.pem", good)

	out, ok := runOpenSSL(t, "verify", "-crl_check", "-CAfile", chainPEM, "-CRLfile", crlPEM, badPEM)
	if ok || !strings.Contains(out, "certificate revoked") {
		t.Fatalf("openssl verify accepted the revoked certificate (exit ok=%v):\n%s", ok, out)
	}
	out, ok = runOpenSSL(t, "verify", "-crl_check", "-CAfile", chainPEM, "-CRLfile", crlPEM, goodPEM)
	if !ok || !strings.Contains(out, goodPEM+": OK") {
		t.Fatalf("openssl verify refused a good certificate:\n%s", out)
	}
	// The PEM variant served by the CA is the same CRL, and openssl reads it.
	st, _, pemBody := httpGet(t, strings.TrimSuffix(e.crlURL(), ".crl")+".pem")
	if st != http.StatusOK {
		t.Fatalf("PEM CRL: HTTP %d", st)
	}
	out, ok = runOpenSSL(t, "crl", "-noout", "-text", "-in", writeRaw(t, dir, "served.pem", pemBody))
	if !ok || !strings.Contains(strings.ToUpper(strings.ReplaceAll(out, ":", "")), strings.ToUpper(serialOf(bad))) || !strings.Contains(out, "Key Compromise") {
		t.Fatalf("openssl crl on the served PEM does not list %s (Key Compromise):\n%s", serialOf(bad), out)
	}
}

// TestCRLNumberAndExpiry: the CRL number grows with each change, and a
// revoked certificate leaves the CRL once it has expired (at the next
// rebuild).
func TestCRLNumberAndExpiry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := startCA(t, "")
	first, _ := e.fetchCRL(t)
	if first.Number == nil || first.Number.Sign() <= 0 {
		t.Fatalf("CRL number %v", first.Number)
	}
	if !first.NextUpdate.After(time.Now()) || first.NextUpdate.Sub(first.ThisUpdate) > time.Hour {
		t.Fatalf("CRL validity %s – %s: want a short nextUpdate in the future", first.ThisUpdate, first.NextUpdate)
	}
	// Unchanged revocations: the same CRL is served.
	again, _ := e.fetchCRL(t)
	if again.Number.Cmp(first.Number) != 0 {
		t.Fatalf("CRL number changed without a revocation: %v → %v", first.Number, again.Number)
	}

	// A certificate that expires in a minute, recorded by this CA.
	brief := e.Leaf(t, "spiffe://example.org/ns/prod/brief", testca.TTL(time.Minute)).Leaf()
	if err := (&ca.Authority{Issuer: e.Issuer, Store: e.Store(t)}).Import(ctx, brief, "test"); err != nil {
		t.Fatal(err)
	}
	e.revoke(t, brief, "superseded")
	second, _ := e.fetchCRL(t)
	if second.Number.Cmp(first.Number) <= 0 {
		t.Fatalf("CRL number did not grow after a revocation: %v → %v", first.Number, second.Number)
	}
	if ent, ok := crlHas(second, brief); !ok || ent.ReasonCode != 4 {
		t.Fatalf("the CRL lacks %s (superseded): %+v", serialOf(brief), second.RevokedCertificateEntries)
	}

	// Once it has expired, the next CRL (after another change) drops it: the
	// service's CRL builder over its store, with a clock past the expiry
	// instead of a wait for it.
	other := e.Enroll(t, "spiffe://example.org/ns/prod/other", api.TokenRequest{}).Leaf()
	e.revoke(t, other, "")
	later := &publish.CRL{Issuer: e.Issuer, Store: e.Store(t), Now: func() time.Time { return brief.NotAfter.Add(time.Second) }}
	der, _, err := later.Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	third, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if third.Number.Cmp(second.Number) <= 0 {
		t.Fatalf("CRL number did not grow: %v → %v", second.Number, third.Number)
	}
	if _, ok := crlHas(third, other); !ok {
		t.Fatalf("the CRL lacks %s", serialOf(other))
	}
	if _, ok := crlHas(third, brief); ok {
		t.Fatalf("the CRL still lists %s, expired at %s", serialOf(brief), brief.NotAfter)
	}
}
