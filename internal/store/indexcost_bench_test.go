package store

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/pgtest"
)

// BenchmarkIssuanceWrites is what one enrollment writes to the database
// (certificate, its index entries, token, log entry and hashes) in a store
// that already holds 20,000 certificates: SQLite's WAL pages per issuance
// (wal-pages/op, automatic checkpoints off so the WAL keeps them all), one
// at a time and 64 at once (group commit shares pages), and PostgreSQL's
// WAL bytes per issuance (wal-B/op, from the WAL position), 64 at once.
// Serials are random, as issued ones are, so that each index takes its
// entries where real ones would land.
//
//	go test -run XXX -bench IssuanceWrites -benchtime 2000x ./internal/store
func BenchmarkIssuanceWrites(b *testing.B) {
	ctx := context.Background()
	for _, conc := range []int{1, 64} {
		b.Run(fmt.Sprintf("sqlite/c=%d", conc), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "w.db")
			db, err := Open(ctx, "sqlite:"+path)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			// The writer pool's one connection keeps the setting.
			for _, q := range []string{"PRAGMA wal_autocheckpoint = 0", "PRAGMA wal_checkpoint(TRUNCATE)"} {
				if _, err := db.writer.Exec(q); err != nil {
					b.Fatal(err)
				}
			}
			issueWrites(b, db, conc, func() float64 {
				fi, err := os.Stat(path + "-wal")
				if err != nil {
					return 0
				}
				// A 32-byte header, then frames of a 24-byte header and a page.
				return float64(max(fi.Size()-32, 0)) / (24 + 4096)
			}, "wal-pages/op")
		})
	}
	b.Run("postgres/c=64", func(b *testing.B) {
		db, err := Open(ctx, pgtest.Start(b).NewDatabase(b))
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		issueWrites(b, db, 64, func() float64 {
			var lsn int64
			if err := db.reader.QueryRow("SELECT pg_current_wal_insert_lsn() - '0/0'").Scan(&lsn); err != nil {
				b.Fatal(err)
			}
			return float64(lsn)
		}, "wal-B/op")
	})
}

// issueWrites loads db, then enrolls b.N certificates conc at once and
// reports the growth of written (a counter of unit) per enrollment.
func issueWrites(b *testing.B, db *DB, conc int, written func() float64, unit string) {
	ctx := context.Background()
	now := time.Now()
	scaleLoad(b, db, 20_000, 2_000, now)
	for i := range b.N {
		if err := db.CreateToken(ctx, Token{ID: fmt.Sprintf("t%d", i), SecretHash: []byte("h"), SPIFFEID: fmt.Sprintf("spiffe://example.org/e/%d", i),
			CreatedAt: now, ExpiresAt: now.Add(time.Hour), CreatedBy: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
	if db.kind == "sqlite" {
		if _, err := db.writer.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
			b.Fatal(err)
		}
	}
	der := make([]byte, 700)
	var next atomic.Int64
	var wg sync.WaitGroup
	w0 := written()
	b.ResetTimer()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < b.N; i = int(next.Add(1) - 1) {
				sum := sha256.Sum256([]byte{byte(i), byte(i >> 8), byte(i >> 16), byte(i >> 24)})
				id := fmt.Sprintf("t%d", i)
				c := &Certificate{Serial: fmt.Sprintf("%x", sum[:16]), SPIFFEID: fmt.Sprintf("spiffe://example.org/e/%d", i),
					NotBefore: now, NotAfter: now.Add(time.Hour), IssuedAt: now.Add(time.Duration(i)), DER: der[:500],
					RequestedBy: "token:" + id, LogEntry: der, Check: &IssueCheck{TokenCreated: now}}
				if err := db.RecordIssuance(ctx, c, id, now); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric((written()-w0)/float64(b.N), unit)
}
