package caservice_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"io"
	"net/http"
	"net/url"
	"testing"

	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/keyref/softhsmtest"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/translog"
)

// revocationURL is where svc's plain-HTTP listener serves what u (a CRL or
// OCSP URL written into a certificate by an earlier run) names.
func revocationURL(t *testing.T, svc *caservice.Service, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + svc.HTTPAddr().String() + p.Path
}

// crlOf fetches the CRL cert points at and checks it is signed by issuer.
func crlOf(t *testing.T, svc *caservice.Service, cert, issuer *x509.Certificate) *x509.RevocationList {
	t.Helper()
	if len(cert.CRLDistributionPoints) == 0 {
		t.Fatal("the certificate names no CRL")
	}
	resp, err := http.Get(revocationURL(t, svc, cert.CRLDistributionPoints[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	der, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CRL %s: %s %s", cert.CRLDistributionPoints[0], resp.Status, der)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		t.Fatalf("the CRL at %s is not signed by %s: %v", cert.CRLDistributionPoints[0], issuer.Subject.CommonName, err)
	}
	return crl
}

// ocspStatus asks svc's OCSP responder about cert, issued by issuer.
func ocspStatus(t *testing.T, svc *caservice.Service, cert, issuer *x509.Certificate) int {
	t.Helper()
	return ocspAnswer(t, svc, cert, issuer).Status
}

// ocspAnswer is svc's OCSP answer about cert, issued by issuer, checked
// against issuer (x/crypto/ocsp).
func ocspAnswer(t *testing.T, svc *caservice.Service, cert, issuer *x509.Certificate) *ocsp.Response {
	t.Helper()
	req, err := ocsp.CreateRequest(cert, issuer, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(revocationURL(t, svc, cert.OCSPServer[0]), "application/ocsp-request", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	der, _ := io.ReadAll(resp.Body)
	r, err := ocsp.ParseResponseForCert(der, cert, issuer)
	if err != nil {
		t.Fatalf("OCSP about %s: %v", pki.FormatSerial(cert.SerialNumber), err)
	}
	return r
}

func inCRL(crl *x509.RevocationList, cert *x509.Certificate) bool {
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(cert.SerialNumber) == 0 {
			return true
		}
	}
	return false
}

// rotateAndCheck runs the intermediate rotation story on the CA in dir:
// issue under the old intermediate, rotate (the service stopped), restart,
// issue under the new one; both verify, the log records the new
// intermediate, and a revoked certificate of the old one shows in the old
// one's CRL and OCSP, also after another restart.
func rotateAndCheck(t *testing.T, dir string, newKey string) {
	t.Helper()
	ctx := context.Background()
	o := caservice.Options{Dir: dir, Passphrase: []byte(testca.Passphrase), Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0"}
	svc, stop := run(t, o)
	before := enroll(t, svc, "spiffe://example.org/before")
	oldInter := before.Chain[1]
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	rot, err := caservice.RotateIntermediate(ctx, caservice.RotateOptions{Dir: dir, Passphrase: []byte(testca.Passphrase), NewKey: newKey, Iterations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if !rot.Old.Equal(oldInter) || rot.New.Equal(oldInter) {
		t.Fatal("the rotation did not replace the intermediate that issued before it")
	}

	svc, stop = run(t, o)
	after := enroll(t, svc, "spiffe://example.org/after")
	if !after.Chain[1].Equal(rot.New) {
		t.Fatalf("issued after the rotation by %s, want the new intermediate %s", after.Chain[1].Subject.CommonName, rot.New.Subject.CommonName)
	}
	verifyChain(t, dir, before)
	verifyChain(t, dir, after)
	// The log holds the new intermediate, requested by the rotation.
	at, err := svc.Store.LogIndexOf(ctx, pki.FormatSerial(rot.New.SerialNumber))
	if err != nil {
		t.Fatalf("the new intermediate is not in the issuance log: %v", err)
	}
	raw, err := svc.Store.LogEntries(ctx, at, at+1)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := translog.ParseEntry(raw[0])
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := entry.Cert(); c == nil || !c.Equal(rot.New) || entry.RequestedBy != translog.CARequester("rotate-intermediate") {
		t.Fatalf("log entry %d is %+v, want the new intermediate requested by the rotation", at, entry)
	}
	// A certificate of the old intermediate can still be revoked.
	if _, err := adminClient(t, svc).Revoke(ctx, api.RevokeRequest{Serial: pki.FormatSerial(before.Leaf().SerialNumber)}); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	svc, _ = run(t, o)
	if !inCRL(crlOf(t, svc, before.Leaf(), oldInter), before.Leaf()) {
		t.Error("the revoked certificate of the old intermediate is not in the old intermediate's CRL")
	}
	if inCRL(crlOf(t, svc, after.Leaf(), rot.New), after.Leaf()) {
		t.Error("the new intermediate's CRL lists a certificate that was not revoked")
	}
	if s := ocspStatus(t, svc, before.Leaf(), oldInter); s != ocsp.Revoked {
		t.Errorf("OCSP about the revoked certificate of the old intermediate: status %d, want revoked", s)
	}
	if s := ocspStatus(t, svc, after.Leaf(), rot.New); s != ocsp.Good {
		t.Errorf("OCSP about the new intermediate's certificate: status %d, want good", s)
	}
}

// TestRotateIntermediateFileKeys rotates a CA whose keys are files.
func TestRotateIntermediateFileKeys(t *testing.T) {
	rotateAndCheck(t, testca.New(t).Dir, "")
}

// TestRotateIntermediateInToken rotates a CA whose root and intermediate
// are in a SoftHSM2 token, to a new intermediate key in the token.
func TestRotateIntermediateInToken(t *testing.T) {
	tok := softhsmtest.New(t)
	dir := initInToken(t, pki.KeyRefs{Root: tok.URI("root"), Intermediate: tok.URI("intermediate")})
	rotateAndCheck(t, dir, tok.URI("intermediate-2"))
}
