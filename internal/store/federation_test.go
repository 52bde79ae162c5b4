package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/pgtest"
	"github.com/mutual-tls/mutual/internal/store"
)

// TestFederationContract: on SQLite and PostgreSQL, relationships and
// bundles are stored with their audit trail, a rollback is refused, and
// replicas storing the same bundle at once record one change.
func TestFederationContract(t *testing.T) {
	pgServer = pgtest.Start(t)
	defer func() { pgServer = nil }()
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) { testFederation(t, open(t)) })
		t.Run(name+"/partners", func(t *testing.T) { testEndPartner(t, open(t)) })
		t.Run(name+"/sightings", func(t *testing.T) { testPartnerScopeAndSightings(t, open(t)) })
	}
}

func testFederation(t *testing.T, db *store.DB) {
	ctx := context.Background()
	at := time.Now().UTC().Truncate(time.Microsecond)
	f := store.Federation{TrustDomain: "partner.example", EndpointURL: "https://partner.example/bundle", Profile: "https_spiffe",
		EndpointSPIFFEID: "spiffe://partner.example/spire/server", CreatedAt: at, CreatedBy: "spiffe://home.example/admin/op"}
	initial := store.TrustBundle{TrustDomain: "partner.example", X509AuthoritiesPEM: "A", Fingerprints: []string{"a"}, UpdatedAt: at, UpdatedBy: f.CreatedBy}
	if err := db.CreateFederation(ctx, f, &initial); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateFederation(ctx, f, nil); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("second CreateFederation = %v, want ErrAlreadyExists", err)
	}
	fs, err := db.ListFederations(ctx)
	if err != nil || len(fs) != 1 || fs[0].EndpointSPIFFEID != f.EndpointSPIFFEID || !fs[0].CreatedAt.Equal(at) || !fs[0].LastAttempt.IsZero() {
		t.Fatalf("ListFederations = %+v, %v", fs, err)
	}
	if err := db.RecordFederationAttempt(ctx, "partner.example", at, "down"); err != nil {
		t.Fatal(err)
	}
	if fs, _ := db.ListFederations(ctx); fs[0].LastError != "down" || !fs[0].LastAttempt.Equal(at) {
		t.Errorf("after a failed attempt: %+v", fs[0])
	}

	next := store.TrustBundle{TrustDomain: "partner.example", Sequence: 5, RefreshHint: time.Minute, X509AuthoritiesPEM: "AB",
		Fingerprints: []string{"a", "b"}, UpdatedAt: at, UpdatedBy: "federation:https://partner.example/bundle"}
	// Replicas fetching the same bundle at once: one change.
	var wg sync.WaitGroup
	changed := make(chan bool, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := db.SetBundle(ctx, next)
			if err != nil {
				t.Error(err)
			}
			changed <- c
		}()
	}
	wg.Wait()
	close(changed)
	n := 0
	for c := range changed {
		if c {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d of 4 concurrent SetBundle calls reported a change, want 1", n)
	}
	rollback := next
	rollback.Sequence, rollback.Fingerprints, rollback.X509AuthoritiesPEM = 4, []string{"c"}, "C"
	if _, err := db.SetBundle(ctx, rollback); !errors.Is(err, store.ErrStaleBundle) {
		t.Errorf("SetBundle of an older sequence = %v, want ErrStaleBundle", err)
	}
	rollback.Sequence = 5
	if _, err := db.SetBundle(ctx, rollback); !errors.Is(err, store.ErrStaleBundle) {
		t.Errorf("SetBundle of other keys under the same sequence = %v, want ErrStaleBundle", err)
	}
	b, err := db.GetBundle(ctx, "partner.example")
	if err != nil || b.Sequence != 5 || b.RefreshHint != time.Minute || b.X509AuthoritiesPEM != "AB" {
		t.Errorf("GetBundle = %+v, %v", b, err)
	}

	if err := db.DeleteFederation(ctx, "partner.example", "spiffe://home.example/admin/op", at); err != nil {
		t.Fatal(err)
	}
	if _, err := db.GetBundle(ctx, "partner.example"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("bundle after DeleteFederation: %v, want ErrNotFound", err)
	}
	if err := db.DeleteFederation(ctx, "partner.example", "x", at); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteFederation = %v, want ErrNotFound", err)
	}
	cs, err := db.ListBundleChanges(ctx, "partner.example")
	if err != nil || len(cs) != 3 {
		t.Fatalf("changes = %+v, %v; want added, updated, removed", cs, err)
	}
	if cs[0].Action != store.ActionFederationAdded || cs[0].By != f.CreatedBy || len(cs[0].Added) != 1 ||
		cs[1].Action != store.ActionBundleUpdated || cs[1].Sequence != 5 || len(cs[1].Added) != 1 || cs[1].Added[0] != "b" ||
		cs[2].Action != store.ActionFederationRemoved || len(cs[2].Removed) != 2 {
		t.Errorf("changes = %+v", cs)
	}
}

// testEndPartner: ending a partnership revokes the certificates under its
// prefix only (a name that merely starts the same, or uses LIKE's
// wildcards, is untouched), keeps their identities revoked, voids its
// unused tokens and drops its federation; with no certificate it ends too.
func testEndPartner(t *testing.T, db *store.DB) {
	ctx := context.Background()
	at := time.Now().UTC().Truncate(time.Microsecond)
	for _, p := range []store.Partner{{Name: "acme", TrustDomain: "acme.example"}, {Name: "acme2"}, {Name: "empty"}} {
		p.EndsAt, p.CreatedAt, p.CreatedBy = at.Add(time.Hour), at, "op"
		if err := db.CreatePartner(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.CreateFederation(ctx, store.Federation{TrustDomain: "acme.example", EndpointURL: "https://acme.example/b", Profile: "https_web", CreatedAt: at, CreatedBy: "op"}, nil); err != nil {
		t.Fatal(err)
	}
	issue := func(serial, id string) {
		c := &store.Certificate{Serial: serial, SPIFFEID: id, NotBefore: at.Add(-time.Minute), NotAfter: at.Add(time.Hour), IssuedAt: at.Add(-time.Minute), DER: []byte(serial), RequestedBy: "test"}
		if err := db.RecordIssuance(ctx, c, "", at.Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	issue("a1", "spiffe://td/partner/acme/x")
	issue("a2", "spiffe://td/partner/acme2/x")
	issue("a3", "spiffe://td/partner/acmeX/x")
	if err := db.CreateToken(ctx, store.Token{ID: "t1", SecretHash: []byte("h"), SPIFFEID: "spiffe://td/partner/acme/y", CreatedAt: at, ExpiresAt: at.Add(time.Hour), CreatedBy: "op"}); err != nil {
		t.Fatal(err)
	}
	if cs, err := db.CertificatesUnder(ctx, "spiffe://td/partner/acme/", 10); err != nil || len(cs) != 1 || cs[0].Serial != "a1" {
		t.Errorf("CertificatesUnder acme = %+v, %v; want a1 only", cs, err)
	}
	revs, err := db.EndPartner(ctx, "acme", "spiffe://td/partner/acme/", "op", 5, at)
	if err != nil || len(revs) != 1 || revs[0].Serial != "a1" {
		t.Fatalf("EndPartner = %+v, %v; want a1 only", revs, err)
	}
	for serial, want := range map[string]bool{"a1": true, "a2": false, "a3": false} {
		if c, err := db.GetCertificate(ctx, serial); err != nil || c.Revoked() != want {
			t.Errorf("%s revoked = %v (%v), want %v", serial, c.Revoked(), err, want)
		}
	}
	if tok, err := db.GetToken(ctx, "t1"); err != nil || tok.ExpiresAt.After(tok.CreatedAt) {
		t.Errorf("the partnership's unused token expires %v (%v), want void", tok.ExpiresAt, err)
	}
	if fs, err := db.ListFederations(ctx); err != nil || len(fs) != 0 {
		t.Errorf("federations after the end: %+v (%v)", fs, err)
	}
	if _, err := db.EndPartner(ctx, "acme", "spiffe://td/partner/acme/", "op", 5, at); !errors.Is(err, store.ErrPartnershipEnded) {
		t.Errorf("second EndPartner = %v, want ErrPartnershipEnded", err)
	}
	if _, err := db.EndPartner(ctx, "empty", "spiffe://td/partner/empty/", "op", 5, at); err != nil {
		t.Errorf("EndPartner with no certificate = %v", err)
	}
	if p, err := db.GetPartner(ctx, "empty"); err != nil || !p.Ended() {
		t.Errorf("partnership with no certificate after EndPartner: %+v (%v)", p, err)
	}
	if _, err := db.EndPartner(ctx, "nobody", "spiffe://td/partner/nobody/", "op", 5, at); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("EndPartner of an unknown partnership = %v, want ErrNotFound", err)
	}
}
