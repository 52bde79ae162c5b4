package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
// WAL records and bytes per issuance (wal-records/op, wal-B/op; btree- and
// heap-records/op of them), 64 at once.
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
			issueWrites(b, db, conc, func() func() {
				return func() {
					fi, err := os.Stat(path + "-wal")
					if err != nil {
						b.Fatal(err)
					}
					// A 32-byte header, then frames of a 24-byte header and a page.
					b.ReportMetric(float64(max(fi.Size()-32, 0))/(24+4096)/float64(b.N), "wal-pages/op")
				}
			})
		})
	}
	b.Run("postgres/c=64", func(b *testing.B) {
		db, err := Open(ctx, pgtest.Start(b).NewDatabase(b))
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		if _, err := db.writer.Exec("CREATE EXTENSION IF NOT EXISTS pg_walinspect"); err != nil {
			b.Skipf("the WAL's records are read with pg_walinspect (PostgreSQL 15's contrib): %v", err)
		}
		issueWrites(b, db, 64, func() func() {
			start := flushWAL(b, db)
			return func() {
				end := flushWAL(b, db)
				// Every record since start, by resource manager (Heap,
				// Btree for index entries, Transaction for commits).
				rows, err := db.reader.Query(`SELECT "resource_manager/record_type", count, combined_size FROM
					pg_get_wal_stats($1::pg_lsn, $2::pg_lsn) WHERE count > 0`, start, end)
				if err != nil {
					b.Fatal(err)
				}
				defer rows.Close()
				var records, size float64
				for rows.Next() {
					var rm string
					var n, bytes int64
					if err := rows.Scan(&rm, &n, &bytes); err != nil {
						b.Fatal(err)
					}
					records, size = records+float64(n), size+float64(bytes)
					if rm == "Btree" || rm == "Heap" {
						b.ReportMetric(float64(n)/float64(b.N), strings.ToLower(rm)+"-records/op")
					}
				}
				b.ReportMetric(records/float64(b.N), "wal-records/op")
				b.ReportMetric(size/float64(b.N), "wal-B/op")
			}
		})
	})
}

// issueWrites loads db, then enrolls b.N certificates conc at once, the
// database's writes of which mark (called before them) and the function it
// returns (after them) report; it reports the latency of one issuance
// (p50-µs, p99-µs) itself.
func issueWrites(b *testing.B, db *DB, conc int, mark func() func()) {
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
	lat := make([]time.Duration, b.N) // each issuance's, for p50 and p99
	report := mark()
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
				start := time.Now()
				if err := db.RecordIssuance(ctx, c, id, now); err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(start)
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	report()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// flushWAL commits a write (mutual_log_sync's) with synchronous_commit on
// (the test server's default is off), which flushes the WAL up to its
// commit record, and returns where the WAL ended before that commit: a
// position flushed, as pg_walinspect wants.
func flushWAL(b *testing.B, db *DB) string {
	tx, err := db.writer.Begin()
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback()
	var lsn string
	for _, q := range []string{"SET LOCAL synchronous_commit = on", "SELECT mutual_log_sync()::text", "SELECT pg_current_wal_insert_lsn()::text"} {
		if err := tx.QueryRow(q).Scan(&lsn); err != nil && err != sql.ErrNoRows {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	return lsn
}
