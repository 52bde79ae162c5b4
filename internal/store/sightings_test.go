package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/pgtest"
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

// TestSightingsAreBounded attacks the sightings table on SQLite and
// PostgreSQL: a reporter inventing ever new identities of a partnership
// replaces its own oldest sightings, never another reporter's, and many
// reporters together push out each other's sightings, never those of a
// reporter holding fewer, nor another partnership's.
func TestSightingsAreBounded(t *testing.T) {
	pgServer = pgtest.Start(t)
	defer func() { pgServer = nil }()
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) { testSightingsAreBounded(t, open(t)) })
	}
}

func testSightingsAreBounded(t *testing.T, db *store.DB) {
	ctx := context.Background()
	start := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	tick := 0
	// report records n invented identities of partner seen by reporter,
	// each later than every earlier sighting.
	report := func(partner, reporter string, n int) {
		t.Helper()
		var batch []store.Sighting
		for range n {
			tick++
			batch = append(batch, store.Sighting{Partner: partner, SPIFFEID: fmt.Sprintf("spiffe://td/partner/%s/invented-%06d", partner, tick),
				Reporter: reporter, At: start.Add(time.Duration(tick) * time.Millisecond)})
		}
		if err := db.RecordSightings(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	count := func(partner, reporter string) int {
		t.Helper()
		all, err := db.PartnerSightings(ctx, partner, 2*store.MaxSightingsPerPartner)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, s := range all {
			if reporter == "" || s.Reporter == reporter {
				n++
			}
		}
		return n
	}
	const honest, attacker = "spiffe://td/ns/prod/proxy", "spiffe://td/ns/prod/attacker"
	report("other", honest, 1)
	report("acme", honest, 1)
	report("acme", attacker, store.MaxSightingsPerReporter)
	report("acme", attacker, store.MaxSightingsPerReporter/2)
	if n := count("acme", attacker); n != store.MaxSightingsPerReporter {
		t.Errorf("a reporter that reported %d identities holds %d sightings, want at most %d", 3*store.MaxSightingsPerReporter/2, n, store.MaxSightingsPerReporter)
	}
	if count("acme", honest) != 1 {
		t.Error("one reporter's flood replaced another reporter's sighting")
	}
	if all, _ := db.PartnerSightings(ctx, "acme", 2*store.MaxSightingsPerPartner); len(all) > 0 && all[len(all)-2].SPIFFEID != fmt.Sprintf("spiffe://td/partner/acme/invented-%06d", 3+store.MaxSightingsPerReporter/2) {
		t.Errorf("the attacker's oldest kept sighting is %s: the oldest were not the ones replaced", all[len(all)-2].SPIFFEID)
	}
	// Nine more reporters fill the partnership past its cap: the row that
	// goes is one of a reporter holding the most (the attacker, first of
	// equals by name), never the honest proxy's, the oldest.
	sybil := func(i int) string { return fmt.Sprintf("spiffe://td/ns/prod/sybil-%02d", i) }
	for i := range store.MaxSightingsPerPartner/store.MaxSightingsPerReporter - 1 {
		report("acme", sybil(i), store.MaxSightingsPerReporter)
	}
	if n := count("acme", ""); n != store.MaxSightingsPerPartner {
		t.Errorf("partnership acme holds %d sightings, want its cap of %d", n, store.MaxSightingsPerPartner)
	}
	if count("acme", honest) != 1 {
		t.Error("ten reporters filling the partnership pushed out the sighting of one that reported a single identity")
	}
	if n := count("acme", attacker); n != store.MaxSightingsPerReporter-1 {
		t.Errorf("the attacker holds %d sightings, want %d: the partnership's excess comes from the reporters holding the most", n, store.MaxSightingsPerReporter-1)
	}
	// Ten more: the flooders share what is left evenly.
	for i := range 10 {
		report("acme", sybil(10+i), store.MaxSightingsPerReporter)
	}
	if n := count("acme", ""); n != store.MaxSightingsPerPartner {
		t.Errorf("partnership acme holds %d sightings, want its cap of %d", n, store.MaxSightingsPerPartner)
	}
	if count("acme", honest) != 1 {
		t.Error("twenty reporters filling the partnership pushed out the sighting of one that reported a single identity")
	}
	fair := (store.MaxSightingsPerPartner - 1) / 20
	for _, r := range []string{attacker, sybil(0), sybil(19)} {
		if n := count("acme", r); n < fair || n > fair+1 {
			t.Errorf("reporter %s holds %d sightings of the partnership's %d, want %d or %d (an even share)", r, n, store.MaxSightingsPerPartner, fair, fair+1)
		}
	}
	// A cut reporter keeps its latest.
	if all, _ := db.PartnerSightings(ctx, "acme", 1); len(all) != 1 || all[0].SPIFFEID != fmt.Sprintf("spiffe://td/partner/acme/invented-%06d", tick) {
		t.Errorf("the latest sighting was not kept: %v", all)
	}
	if count("other", "") != 1 {
		t.Error("filling one partnership replaced another partnership's sighting")
	}
}
