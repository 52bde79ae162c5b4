package store

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/pgtest"
	"github.com/mutual-tls/mutual/internal/procfs"
)

// BenchmarkEnrollStorePostgres is the store's share of an enrollment on
// PostgreSQL, 64 at once, through 1 and 3 stores on one database (as
// replicas would be): the token read, then RecordIssuance (token
// consumed, checks, certificate, log entry). Besides the time and
// allocations it reports the database's CPU time per issuance (pg-µs/op,
// from /proc, of this database's connections; pgbg-µs/op of the server's
// own processes, such as the WAL writer) and this process's
// (go-µs/op): the figures that a change of the batch's statements moves,
// less than the rate with what else the machine runs; and the issuances
// per batch (ops/batch).
//
//	go test -run XXX -bench EnrollStorePostgres -benchtime 4000x ./internal/store
func BenchmarkEnrollStorePostgres(b *testing.B) {
	srv := pgtest.Start(b)
	for _, replicas := range []int{1, 3} {
		b.Run(fmt.Sprintf("replicas=%d", replicas), func(b *testing.B) { benchEnrollStore(b, srv.NewDatabase(b), replicas) })
	}
}

func benchEnrollStore(b *testing.B, url string, replicas int) {
	ctx := context.Background()
	dbs := make([]*DB, replicas)
	for i := range dbs {
		db, err := Open(ctx, url)
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		dbs[i] = db
	}
	now := time.Now()
	entry := make([]byte, 700) // about an enrollment's
	const warm = 64            // issuances that open the pools' connections first
	for i := range b.N + warm {
		if err := dbs[0].CreateToken(ctx, Token{ID: fmt.Sprintf("t%d", i), SecretHash: []byte("h"), SPIFFEID: fmt.Sprintf("spiffe://td/w/%d", i),
			CreatedAt: now, ExpiresAt: now.Add(time.Hour), CreatedBy: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
	enroll := func(i int64) error {
		db := dbs[i%int64(replicas)]
		id := fmt.Sprintf("t%d", i)
		tok, err := db.GetToken(ctx, id)
		if err != nil {
			return err
		}
		c := &Certificate{Serial: fmt.Sprintf("%032x", i), SPIFFEID: tok.SPIFFEID, NotBefore: now, NotAfter: now.Add(time.Hour),
			IssuedAt: now, DER: entry[:500], RequestedBy: "token:" + id, LogEntry: entry, Check: &IssueCheck{TokenCreated: tok.CreatedAt}}
		return db.RecordIssuance(ctx, c, id, now)
	}
	var wg sync.WaitGroup
	for i := range int64(warm) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := enroll(int64(b.N) + i); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	// The database's connections, and the server's own processes (the WAL
	// writer, which flushes what asynchronous commits leave, among them).
	var pids, server []int
	rows, err := dbs[0].reader.QueryContext(ctx, "SELECT pid, datname IS NULL FROM pg_stat_activity WHERE datname = current_database() OR datname IS NULL")
	if err != nil {
		b.Fatal(err)
	}
	for rows.Next() {
		var pid int
		var own bool
		rows.Scan(&pid, &own)
		if own {
			server = append(server, pid)
		} else {
			pids = append(pids, pid)
		}
	}
	rows.Close()
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(32)
	batches := func() (n int64) {
		for _, db := range dbs {
			n += db.group.batches.Load()
		}
		return n
	}
	cpu0, own0, self0, batches0 := procfs.CPUTime(pids...), procfs.CPUTime(server...), selfCPU(), batches()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := enroll(n.Add(1) - 1); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64((procfs.CPUTime(pids...)-cpu0).Microseconds())/float64(b.N), "pg-µs/op")
	b.ReportMetric(float64((procfs.CPUTime(server...)-own0).Microseconds())/float64(b.N), "pgbg-µs/op")
	b.ReportMetric(float64((selfCPU()-self0).Microseconds())/float64(b.N), "go-µs/op")
	b.ReportMetric(float64(b.N)/float64(batches()-batches0), "ops/batch")
}

// selfCPU is this process's user and system CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkEnrollStoreSQLite is the store's share of an enrollment on
// SQLite, 64 at once and one at a time, in a store that already holds 20,000 certificates:
// token consumed, checks, certificate, log entry, group commit. It
// reports this process's CPU per issuance (cpu-µs/op: all of SQLite's
// work is in it) and issuances per batch (ops/batch).
//
//	go test -run XXX -bench EnrollStoreSQLite -benchtime 8000x -cpuprofile /tmp/sqlite.prof ./internal/store
func BenchmarkEnrollStoreSQLite(b *testing.B) {
	for _, conc := range []int{64, 1} {
		b.Run(fmt.Sprintf("callers=%d", conc), func(b *testing.B) { benchEnrollSQLite(b, conc) })
	}
}

// benchEnrollSQLite is BenchmarkEnrollStoreSQLite with conc callers (at 1,
// every batch holds one issuance: the fixed cost of a batch).
func benchEnrollSQLite(b *testing.B, conc int) {
	db, err := Open(context.Background(), "sqlite:"+filepath.Join(b.TempDir(), "e.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	b.ReportAllocs()
	issueWrites(b, db, conc, func() func() {
		self0, batches0 := selfCPU(), db.group.batches.Load()
		return func() {
			b.ReportMetric(float64((selfCPU()-self0).Microseconds())/float64(b.N), "cpu-µs/op")
			b.ReportMetric(float64(b.N)/float64(db.group.batches.Load()-batches0), "ops/batch")
		}
	})
}
