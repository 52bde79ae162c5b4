package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkForEachLive100k: one pass over the live certificates of a
// SQLite store holding 100,000 (half of them live), as the CA's summary
// (the dashboard's overview, identities and nodes pages) reads them.
func BenchmarkForEachLive100k(b *testing.B) {
	ctx := context.Background()
	db, err := Open(ctx, "sqlite:"+filepath.Join(b.TempDir(), "live.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	scaleLoad(b, db, 100_000, 10_000, now)
	for b.Loop() {
		n := 0
		if err := db.ForEachLive(ctx, now, func(Live) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
		if n < 40_000 {
			b.Fatalf("%d live certificates, want about half of 100,000", n)
		}
	}
}
