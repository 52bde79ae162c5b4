package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
)

// TestCertificateLookup: GET /v1/certificates/{serial} answers an admin one
// certificate's record and PEM, by the serial in any common spelling, and
// nothing to anyone else.
func TestCertificateLookup(t *testing.T) {
	ctx := context.Background()
	c := testca.New(t)
	e := start(t, c, "")
	enr, err := client.RequestIdentity(ctx, e.token(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{}), pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf := enr.Identity.Leaf()
	serial := pki.FormatSerial(leaf.SerialNumber)
	colons := strings.ToUpper(leaf.SerialNumber.Text(16))
	for i := len(colons) - 2; i > 0; i -= 2 {
		colons = colons[:i] + ":" + colons[i:]
	}
	for _, spelling := range []string{serial, colons, "0x" + serial} {
		got, err := e.admin.Certificate(ctx, spelling)
		if err != nil {
			t.Fatalf("%s: %v", spelling, err)
		}
		certs, err := pki.ParseCertificates([]byte(got.CertificatePEM))
		if err != nil || len(certs) != 1 || !certs[0].Equal(leaf) || got.Serial != serial || got.SPIFFEID != "spiffe://example.org/ns/prod/web" || got.RevokedAt != nil {
			t.Fatalf("%s: %+v (%v)", spelling, got, err)
		}
	}
	if _, err := e.admin.Revoke(ctx, api.RevokeRequest{Serial: serial, Reason: "keyCompromise"}); err != nil {
		t.Fatal(err)
	}
	if got, err := e.admin.Certificate(ctx, serial); err != nil || got.RevokedAt == nil || got.RevocationReason != "keyCompromise" {
		t.Fatalf("after revocation: %+v (%v)", got, err)
	}
	_, err = e.admin.Certificate(ctx, "0badc0ffee")
	wantRefusal(t, "an unknown serial", err, http.StatusNotFound, api.CodeNotFound)
	_, err = e.admin.Certificate(ctx, "not-hex")
	wantRefusal(t, "a malformed serial", err, http.StatusBadRequest, api.CodeBadSerial)
	enr2, err := client.RequestIdentity(ctx, e.token(t, "spiffe://example.org/ns/prod/api", api.TokenRequest{}), pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	wtc := enr2.Identity.TLSCertificate()
	workload, err := client.New([]string{e.svc.URL}, enr2.Identity.Roots, &wtc)
	if err != nil {
		t.Fatal(err)
	}
	_, err = workload.Certificate(ctx, serial)
	wantRefusal(t, "a workload's request", err, http.StatusForbidden, api.CodeAdminRequired)
}

// wantRefusal checks that err is the CA's refusal with status and code.
func wantRefusal(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	if st, c := apiCode(t, err); st != status || c != code {
		t.Errorf("%s: %d %s, want %d %s (%v)", what, st, c, status, code, err)
	}
}
