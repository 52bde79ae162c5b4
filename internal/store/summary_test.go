package store_test

import (
	"slices"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/pgtest"
	"github.com/mutual-tls/mutual/internal/store"
)

// TestSummaryQueries: ForEachLive reads exactly the unexpired, unrevoked
// certificates; RecentRevocations the latest revoked first, on both stores.
func TestSummaryQueries(t *testing.T) {
	pgServer = pgtest.Start(t)
	defer func() { pgServer = nil }()
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			db := open(t)
			now := time.Now().Truncate(time.Microsecond).UTC()
			live, expired, revoked, later := cert("a1", now), cert("a2", now), cert("a3", now), cert("a4", now)
			expired.NotAfter = now.Add(-time.Second)
			later.SPIFFEID = "spiffe://example.org/node/n1"
			for _, c := range []*store.Certificate{live, expired, revoked, later} {
				if err := db.RecordIssuance(ctx, c, "", now); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := db.RevokeSerial(ctx, revoked.Serial, 1, now); err != nil {
				t.Fatal(err)
			}
			if _, err := db.RevokeSerial(ctx, live.Serial, 4, now.Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			var got []string
			if err := db.ForEachLive(ctx, now, func(l store.Live) error {
				got = append(got, l.Serial+" "+l.SPIFFEID)
				if !l.NotAfter.Equal(later.NotAfter) || !l.IssuedAt.Equal(now) {
					t.Errorf("live %s: not after %s, issued %s", l.Serial, l.NotAfter, l.IssuedAt)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, []string{"a4 spiffe://example.org/node/n1"}) {
				t.Errorf("live: %q", got)
			}
			revs, err := db.RecentRevocations(ctx, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(revs) != 2 || revs[0].Serial != "a1" || revs[0].RevocationReason != 4 || revs[1].Serial != "a3" {
				t.Errorf("recent revocations: %+v", revs)
			}
			if revs, err := db.RecentRevocations(ctx, 1); err != nil || len(revs) != 1 {
				t.Errorf("recent revocations, limit 1: %d (%v)", len(revs), err)
			}
		})
	}
}
