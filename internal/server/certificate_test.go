package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

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
	enr, err := client.RequestIdentity(ctx, e.Token(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{}), pki.KeyECDSAP256, 0)
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
		got, err := e.Admin.Certificate(ctx, spelling)
		if err != nil {
			t.Fatalf("%s: %v", spelling, err)
		}
		certs, err := pki.ParseCertificates([]byte(got.CertificatePEM))
		if err != nil || len(certs) != 1 || !certs[0].Equal(leaf) || got.Serial != serial || got.SPIFFEID != "spiffe://example.org/ns/prod/web" || got.RevokedAt != nil {
			t.Fatalf("%s: %+v (%v)", spelling, got, err)
		}
	}
	if _, err := e.Admin.Revoke(ctx, api.RevokeRequest{Serial: serial, Reason: "keyCompromise"}); err != nil {
		t.Fatal(err)
	}
	if got, err := e.Admin.Certificate(ctx, serial); err != nil || got.RevokedAt == nil || got.RevocationReason != "keyCompromise" {
		t.Fatalf("after revocation: %+v (%v)", got, err)
	}
	_, err = e.Admin.Certificate(ctx, "0badc0ffee")
	wantRefusal(t, "an unknown serial", err, http.StatusNotFound, api.CodeNotFound)
	_, err = e.Admin.Certificate(ctx, "not-hex")
	wantRefusal(t, "a malformed serial", err, http.StatusBadRequest, api.CodeBadSerial)
	_, err = workloadClient(t, e).Certificate(ctx, serial)
	wantRefusal(t, "a workload's request", err, http.StatusForbidden, api.CodeAdminRequired)
}

// workloadClient enrolls a workload and returns its client of the CA.
func workloadClient(t *testing.T, e *env) *client.Client {
	t.Helper()
	enr, err := client.RequestIdentity(context.Background(), e.Token(t, "spiffe://example.org/ns/prod/api", api.TokenRequest{}), pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	wtc := enr.Identity.TLSCertificate()
	cl, err := client.New([]string{e.URL}, enr.Identity.Roots, &wtc)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// wantRefusal checks that err is the CA's refusal with status and code.
func wantRefusal(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	if st, c := apiCode(t, err); st != status || c != code {
		t.Errorf("%s: %d %s, want %d %s (%v)", what, st, c, status, code, err)
	}
}

// TestSummary: GET /v1/certificates/summary counts live certificates by
// kind, identity and expiry, lists the latest revocation, and answers only
// an admin.
func TestSummary(t *testing.T) {
	ctx := context.Background()
	c := testca.New(t)
	e := start(t, c, "")
	var serials []string
	for _, id := range []string{"spiffe://example.org/ns/prod/web", "spiffe://example.org/ns/prod/web", "spiffe://example.org/node/n1", "spiffe://example.org/ns/prod/old"} {
		enr, err := client.RequestIdentity(ctx, e.Token(t, id, api.TokenRequest{}), pki.KeyECDSAP256, 0)
		if err != nil {
			t.Fatal(err)
		}
		serials = append(serials, pki.FormatSerial(enr.Identity.Leaf().SerialNumber))
	}
	if _, err := e.Admin.Revoke(ctx, api.RevokeRequest{Serial: serials[3], Reason: "superseded"}); err != nil {
		t.Fatal(err)
	}
	sum, err := e.Admin.Summary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sum.LiveByKind["workload"] != 2 || sum.LiveByKind["node"] != 1 {
		t.Errorf("live by kind: %v", sum.LiveByKind)
	}
	if len(sum.ExpiringHourly) != 24 || sum.ExpiringHourly[0] != 3 || len(sum.ExpiringDaily) != 7 || sum.ExpiringDaily[0] < 3 {
		t.Errorf("expiring: hourly %v, daily %v", sum.ExpiringHourly, sum.ExpiringDaily)
	}
	var web *api.IdentitySummary
	for i, id := range sum.Identities {
		if id.SPIFFEID == "spiffe://example.org/ns/prod/old" {
			t.Errorf("a revoked identity is listed as live: %+v", id)
		}
		if id.SPIFFEID == "spiffe://example.org/ns/prod/web" {
			web = &sum.Identities[i]
		}
	}
	if web == nil || web.Certificates != 2 || web.Kind != "workload" || web.NewestSerial == "" {
		t.Errorf("web's summary: %+v", web)
	}
	if len(sum.RecentRevocations) != 1 || sum.RecentRevocations[0].Serial != serials[3] || sum.RecentRevocations[0].RevocationReason != "superseded" {
		t.Errorf("recent revocations: %+v", sum.RecentRevocations)
	}
	_, err = workloadClient(t, e).Summary(ctx)
	wantRefusal(t, "a workload's request", err, http.StatusForbidden, api.CodeAdminRequired)
}

// TestCertificateStatusFilter: GET /v1/certificates?status= selects valid,
// expiring and revoked certificates at the CA (pages of the CA's own
// listing, not a client's filter), and refuses a status it does not know.
func TestCertificateStatusFilter(t *testing.T) {
	ctx := context.Background()
	c := testca.New(t)
	e := start(t, c, "")
	serials := map[string]string{}
	for _, name := range []string{"web", "db", "api"} {
		enr, err := client.RequestIdentity(ctx, e.Token(t, "spiffe://example.org/ns/prod/"+name, api.TokenRequest{}), pki.KeyECDSAP256, 0)
		if err != nil {
			t.Fatal(err)
		}
		serials[name] = pki.FormatSerial(enr.Identity.Leaf().SerialNumber)
	}
	if _, err := e.Admin.Revoke(ctx, api.RevokeRequest{Serial: serials["db"], Reason: "superseded"}); err != nil {
		t.Fatal(err)
	}
	list := func(q api.CertificateQuery) map[string]bool {
		t.Helper()
		got, err := e.Admin.CertificatesQuery(ctx, q)
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		out := map[string]bool{}
		for _, ci := range got.Certificates {
			out[ci.SPIFFEID[len("spiffe://example.org/ns/prod/"):]] = true
		}
		return out
	}
	in := func(m map[string]bool, names ...string) bool {
		for _, n := range names {
			if !m[n] {
				return false
			}
		}
		return true
	}
	if got := list(api.CertificateQuery{Status: api.StatusRevoked}); len(got) != 1 || !got["db"] {
		t.Errorf("revoked: %v, want db only", got)
	}
	if got := list(api.CertificateQuery{Status: api.StatusValid}); got["db"] || !in(got, "web", "api") {
		t.Errorf("valid: %v, want web and api, not the revoked db", got)
	}
	// Default leaves live an hour: expiring within a day, not within a minute.
	if got := list(api.CertificateQuery{Status: api.StatusExpiring}); got["db"] || !in(got, "web", "api") {
		t.Errorf("expiring within a day: %v, want web and api", got)
	}
	if got := list(api.CertificateQuery{Status: api.StatusExpiring, ExpiringWithin: time.Minute}); len(got) != 0 {
		t.Errorf("expiring within a minute: %v, want none", got)
	}
	if got := list(api.CertificateQuery{Status: api.StatusRevoked, SPIFFEID: "spiffe://example.org/ns/prod/web"}); len(got) != 0 {
		t.Errorf("revoked web: %v, want none", got)
	}
	for _, bad := range []api.CertificateQuery{{Status: "stale"}, {Status: api.StatusExpiring, ExpiringWithin: -time.Hour}} {
		_, err := e.Admin.CertificatesQuery(ctx, bad)
		wantRefusal(t, fmt.Sprintf("%+v", bad), err, http.StatusBadRequest, api.CodeBadRequest)
	}
}
