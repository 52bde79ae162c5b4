package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/store"
)

// testPartnerScopeAndSightings: a scope is stored and replaced (never on an
// ended partnership); a sighting keeps the latest time per identity and
// proxy, an older report never moves it back; holdings count the live
// certificates only.
func testPartnerScopeAndSightings(t *testing.T, db *store.DB) {
	ctx := context.Background()
	at := time.Now().UTC().Truncate(time.Microsecond)
	p := store.Partner{Name: "acme", Services: []string{"spiffe://td/api"}, Requests: []string{"GET /v1/"}, EndsAt: at.Add(time.Hour), CreatedAt: at, CreatedBy: "op"}
	if err := db.CreatePartner(ctx, p); err != nil {
		t.Fatal(err)
	}
	if got, err := db.GetPartner(ctx, "acme"); err != nil || fmt.Sprint(got.Services, got.Requests) != "[spiffe://td/api] [GET /v1/]" {
		t.Fatalf("stored scope %v %v (%v)", got.Services, got.Requests, err)
	}
	if err := db.SetPartnerScope(ctx, "acme", []string{"spiffe://td/other"}, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.GetPartner(ctx, "acme"); fmt.Sprint(got.Services, len(got.Requests)) != "[spiffe://td/other] 0" {
		t.Errorf("replaced scope %v %v", got.Services, got.Requests)
	}
	if err := db.SetPartnerScope(ctx, "nobody", []string{"spiffe://td/api"}, nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetPartnerScope of an unknown partnership = %v, want ErrNotFound", err)
	}

	for i, serial := range []string{"live1", "live2", "revoked", "expired"} {
		notAfter := at.Add(time.Duration(i+1) * time.Minute)
		if serial == "expired" {
			notAfter = at.Add(-time.Second)
		}
		c := &store.Certificate{Serial: serial, SPIFFEID: "spiffe://td/partner/acme/x", NotBefore: at.Add(-time.Hour), NotAfter: notAfter, IssuedAt: at.Add(-time.Hour), DER: []byte(serial), RequestedBy: "test"}
		if err := db.RecordIssuance(ctx, c, "", at.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.RevokeSerial(ctx, "revoked", 1, at); err != nil {
		t.Fatal(err)
	}
	if h, err := db.HoldingsUnder(ctx, "spiffe://td/partner/acme/", at); err != nil || h.Live != 2 || !h.SoonestExpiry.Equal(at.Add(time.Minute)) {
		t.Errorf("holdings = %+v (%v), want 2 live, the first expiring at %v", h, err, at.Add(time.Minute))
	}

	seen := func(id, by string, when time.Time) store.Sighting {
		return store.Sighting{Partner: "acme", SPIFFEID: id, Reporter: by, At: when}
	}
	if err := db.RecordSightings(ctx, []store.Sighting{seen("spiffe://td/partner/acme/x", "spiffe://td/proxy-a", at), seen("spiffe://td/partner/acme/x", "spiffe://td/proxy-b", at.Add(-time.Minute))}); err != nil {
		t.Fatal(err)
	}
	// A late, older report from proxy-a.
	if err := db.RecordSightings(ctx, []store.Sighting{seen("spiffe://td/partner/acme/x", "spiffe://td/proxy-a", at.Add(-time.Hour))}); err != nil {
		t.Fatal(err)
	}
	got, err := db.PartnerSightings(ctx, "acme", 10)
	if err != nil || len(got) != 2 || got[0].Reporter != "spiffe://td/proxy-a" || !got[0].At.Equal(at) || !got[1].At.Equal(at.Add(-time.Minute)) {
		t.Errorf("sightings = %+v (%v), want proxy-a at %v, then proxy-b a minute before", got, err, at)
	}
	if _, err := db.EndPartner(ctx, "acme", "spiffe://td/partner/acme/", "op", 5, at); err != nil {
		t.Fatal(err)
	}
	if err := db.SetPartnerScope(ctx, "acme", []string{"spiffe://td/api"}, nil); !errors.Is(err, store.ErrPartnershipEnded) {
		t.Errorf("SetPartnerScope of an ended partnership = %v, want ErrPartnershipEnded", err)
	}
}
