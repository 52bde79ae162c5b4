package ca_test

import (
	"context"
	"crypto/x509"
	"slices"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
)

// TestPartnershipEndsInOneCommand: a partner without PKI gets join tokens
// for identities under spiffe://TD/partner/NAME/; its certificates carry the
// partnership's roles and end with it at the latest. Ending it revokes
// them all (heard by OnRevoke, for the push feed), stops their renewal,
// voids unused tokens, refuses new ones and drops its federated bundle.
func TestPartnershipEndsInOneCommand(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	other := testca.New(t, testca.WithTrustDomain("acme.example"))
	if _, err := e.a.AddFederation(ctx, e.admin, ca.FederationRequest{TrustDomain: "acme.example", EndpointURL: "https://acme.example/bundle",
		Profile: "https_web", Bundle: pki.EncodeCertificates(other.Root)}); err != nil {
		t.Fatal(err)
	}
	ends := e.now.Add(30 * time.Minute)
	if _, err := e.a.CreatePartner(ctx, e.admin, ca.PartnerRequest{Name: "acme", TrustDomain: "acme.example", Roles: []string{"reader"}, Services: []string{"spiffe://example.org/ns/prod/orders"}, EndsAt: ends}); err != nil {
		t.Fatal(err)
	}
	tok, rec, err := e.a.CreatePartnerToken(ctx, e.admin, ca.PartnerTokenRequest{Partner: "acme", Path: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	if rec.SPIFFEID != "spiffe://example.org/partner/acme/billing" || rec.ExpiresAt.After(ends) {
		t.Errorf("partner token for %s expiring %s, want spiffe://example.org/partner/acme/billing before %s", rec.SPIFFEID, rec.ExpiresAt, ends)
	}
	_, req := csr(t, x509.CertificateRequest{})
	is, err := e.a.Enroll(ctx, tok, req, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The policy default is an hour; the partnership ends in 30 minutes.
	if leaf(t, is).NotAfter.After(ends) || !slices.Equal(identity.Roles(leaf(t, is)), []string{"reader"}) {
		t.Errorf("partner certificate until %s with roles %v, want at most %s and [reader]", leaf(t, is).NotAfter, identity.Roles(leaf(t, is)), ends)
	}
	unused, _, err := e.a.CreatePartnerToken(ctx, e.admin, ca.PartnerTokenRequest{Partner: "acme", Path: "later"})
	if err != nil {
		t.Fatal(err)
	}
	// A partner identity outside any partnership is never issued.
	_, req = csr(t, x509.CertificateRequest{})
	_, err = e.a.Enroll(ctx, e.token(t, ca.TokenRequest{ID: "spiffe://example.org/partner/nobody/x"}), req, 0)
	wantCode(t, err, ca.KindForbidden, api.CodeEntryNotGranted)

	e.now = e.now.Add(time.Minute)
	revs, err := e.a.EndPartner(ctx, e.admin, "acme")
	if err != nil {
		t.Fatal(err)
	}
	serial := is.Serial
	if len(revs) != 1 || revs[0].Serial != serial || !slices.Contains(e.revoked, serial) {
		t.Errorf("EndPartner revoked %+v (OnRevoke heard %v), want %s", revs, e.revoked, serial)
	}
	_, req = csr(t, x509.CertificateRequest{})
	if _, err := e.a.Renew(ctx, leaf(t, is), req, 0); err == nil {
		t.Error("a certificate of the ended partnership renewed")
	}
	_, req = csr(t, x509.CertificateRequest{})
	if _, err := e.a.Enroll(ctx, unused, req, 0); err == nil {
		t.Error("a token of the ended partnership enrolled")
	}
	_, _, err = e.a.CreatePartnerToken(ctx, e.admin, ca.PartnerTokenRequest{Partner: "acme", Path: "x"})
	wantCode(t, err, ca.KindForbidden, api.CodeEntryNotGranted)
	if fs, err := e.a.ListFederations(ctx); err != nil || len(fs) != 0 {
		t.Errorf("federations after the partnership ended: %+v (%v), want acme.example dropped", fs, err)
	}
	if bs, err := e.a.FederatedBundles(ctx); err != nil || len(bs) != 0 {
		t.Errorf("federated bundles after the partnership ended: %+v (%v)", bs, err)
	}
	if _, err := e.a.EndPartner(ctx, e.admin, "acme"); err == nil {
		t.Error("ending a partnership twice succeeded")
	}
	p, certs, err := e.a.GetPartner(ctx, "acme")
	if err != nil || !p.Ended() || p.EndedBy != e.admin.String() || len(certs) != 1 || !certs[0].Revoked() {
		t.Errorf("GetPartner after the end: %+v, %d certificates (%v)", p, len(certs), err)
	}
}

// TestPartnershipEndsOnItsDate: EndExpiredPartners ends a partnership once
// its end date has passed, and not before; with no certificate issued
// under it, it ends all the same.
func TestPartnershipEndsOnItsDate(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if _, err := e.a.CreatePartner(ctx, e.admin, ca.PartnerRequest{Name: "brief", Services: []string{"spiffe://example.org/**"}, EndsAt: e.now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.a.CreatePartner(ctx, e.admin, ca.PartnerRequest{Name: "past", Services: []string{"spiffe://example.org/**"}, EndsAt: e.now.Add(-time.Hour)}); err == nil {
		t.Error("a partnership ending in the past was created")
	}
	ended := func() bool {
		p, _, err := e.a.GetPartner(ctx, "brief")
		if err != nil {
			t.Fatal(err)
		}
		return p.Ended()
	}
	if err := e.a.EndExpiredPartners(ctx, e.admin); err != nil || ended() {
		t.Fatalf("before its date: ended = %v (%v)", ended(), err)
	}
	e.now = e.now.Add(time.Hour + time.Second)
	if err := e.a.EndExpiredPartners(ctx, e.admin); err != nil || !ended() {
		t.Fatalf("after its date: ended = %v (%v)", ended(), err)
	}
}
