package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// logged is a certificate with a log entry, as the CA records one.
func logged(serial string, now time.Time) *Certificate {
	return &Certificate{Serial: serial, SPIFFEID: "spiffe://td/w/" + serial, NotBefore: now, NotAfter: now.Add(time.Hour),
		IssuedAt: now, DER: []byte{0x30}, RequestedBy: "import", LogEntry: []byte("entry " + serial)}
}

// openFile opens the SQLite store at path for the rest of the test.
func openFile(t *testing.T, path string) *DB {
	t.Helper()
	db, err := Open(context.Background(), "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// appendOne records a logged certificate through db and checks the index
// it got, answered and stored.
func appendOne(t *testing.T, db *DB, serial string, want int64) []byte {
	t.Helper()
	ctx := context.Background()
	c := logged(serial, time.Now())
	if err := db.RecordIssuance(ctx, c, "", time.Now()); err != nil {
		t.Fatalf("record %s: %v", serial, err)
	}
	if stored, err := db.LogIndexOf(ctx, serial); err != nil || stored != want || c.LogIndex != want {
		t.Fatalf("certificate %s: log index %d answered, %d stored (%v); want %d", serial, c.LogIndex, stored, err, want)
	}
	return c.LogEntry
}

// TestLogEdgeAnotherWriter has a second store on the same SQLite file (a
// mutual command beside the CA) append between the first one's batches:
// the first must notice that its cached right edge is stale and build on
// the stored log, never fork it.
func TestLogEdgeAnotherWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mutual.db")
	a, b := openFile(t, path), openFile(t, path)
	var entries [][]byte
	next := func(db *DB, n int) {
		for range n {
			entries = append(entries, appendOne(t, db, fmt.Sprintf("%04x", len(entries)), int64(len(entries))))
		}
	}
	next(a, 3) // a caches the edge at size 3
	next(b, 2)
	next(a, 3)
	next(b, 1) // sizes 8 and 9: the edge changes shape entirely
	next(a, 1)
	checkTree(t, a, entries)
	checkTree(t, b, entries)
}

// TestLogEdgeLogRewritten has another connection replace the log with a
// different one of the same size (a restore or repair through SQLite
// while the CA runs): the size alone does not tell, the next append must
// still build on the hashes now stored, not on those it cached.
func TestLogEdgeLogRewritten(t *testing.T) {
	t.Run("same writer connection", func(t *testing.T) { testLogEdgeLogRewritten(t, false) })
	// database/sql replaces a writer connection it found unusable (a
	// statement cut off by its context); PRAGMA data_version is counted
	// per connection, so the new one can show the cached version again.
	t.Run("writer connection replaced", func(t *testing.T) { testLogEdgeLogRewritten(t, true) })
}

func testLogEdgeLogRewritten(t *testing.T, replaceWriter bool) {
	ctx := context.Background()
	dir := t.TempDir()
	other := openFile(t, filepath.Join(dir, "other.db"))
	var entries [][]byte
	for i := range 3 {
		entries = append(entries, appendOne(t, other, fmt.Sprintf("bb%02x", i), int64(i)))
	}
	other.Close()
	path := filepath.Join(dir, "mutual.db")
	db := openFile(t, path)
	for i := range 3 {
		appendOne(t, db, fmt.Sprintf("aa%02x", i), int64(i))
	}
	if replaceWriter {
		db.writer.SetMaxIdleConns(0)
		db.writer.SetMaxIdleConns(2)
	}
	raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetMaxOpenConns(1)
	for _, q := range []string{
		"ATTACH '" + filepath.Join(dir, "other.db") + "' AS other",
		"BEGIN IMMEDIATE",
		"DELETE FROM main.log_entries", "INSERT INTO main.log_entries SELECT * FROM other.log_entries",
		"DELETE FROM main.log_hashes", "INSERT INTO main.log_hashes SELECT * FROM other.log_hashes",
		"COMMIT",
	} {
		if _, err := raw.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	entries = append(entries, appendOne(t, db, "aa03", 3))
	checkTree(t, db, entries)
}

// TestLogEdgeAfterFailedBatch fails a batch after its hashes were
// computed (an entry row in the way, planted through the writer's own
// connection, which no other-writer check sees): the batch must leave no
// cached edge, and the next ones must build on the stored log.
func TestLogEdgeAfterFailedBatch(t *testing.T) {
	ctx := context.Background()
	db := openFile(t, filepath.Join(t.TempDir(), "mutual.db"))
	var entries [][]byte
	for i := range 3 {
		entries = append(entries, appendOne(t, db, fmt.Sprintf("%04x", i), int64(i)))
	}
	if db.edge.Load() == nil {
		t.Fatal("no right edge cached after three committed appends: the cache is never used")
	}
	if _, err := db.writer.ExecContext(ctx, "INSERT INTO log_entries (idx, data) VALUES (3, x'00')"); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordIssuance(ctx, logged("ff00", time.Now()), "", time.Now()); err == nil {
		t.Fatal("an append onto an index already taken succeeded")
	}
	if e := db.edge.Load(); e != nil {
		t.Fatalf("a failed batch left a cached edge at size %d", e.size)
	}
	if _, err := db.LogIndexOf(ctx, "ff00"); err == nil {
		t.Fatal("the certificate of the failed batch was stored")
	}
	if _, err := db.writer.ExecContext(ctx, "DELETE FROM log_entries WHERE idx = 3"); err != nil {
		t.Fatal(err)
	}
	for i := 3; i < 6; i++ {
		entries = append(entries, appendOne(t, db, fmt.Sprintf("%04x", i), int64(i)))
	}
	checkTree(t, db, entries)
}

// TestBatchWithTheWriterHeld: a transaction that holds the pool's single
// writer connection and never ends (a leak, a stuck statement) must fail
// the next issuance batch once its deadline passes, not hang it for ever.
func TestBatchWithTheWriterHeld(t *testing.T) {
	ctx := context.Background()
	db := openFile(t, filepath.Join(t.TempDir(), "mutual.db"))
	held, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Rollback()
	old := batchTxTimeout
	batchTxTimeout = 50 * time.Millisecond
	defer func() { batchTxTimeout = old }()
	err = db.RecordIssuance(ctx, logged("ab01", time.Now()), "", time.Now())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("issuance with the writer connection held: %v, want the batch's deadline", err)
	}
}

// TestBatchPanic: a batch that panics (net/http recovers a handler's
// panic, so the process goes on) must answer every op it held with an
// error, never a success for a certificate it did not record, and must
// not leave the group commit waiting for a leader that is gone.
func TestBatchPanic(t *testing.T) {
	ctx := context.Background()
	db := openFile(t, filepath.Join(t.TempDir(), "mutual.db"))
	now := time.Now()
	var noCtx context.Context // what makes the batch panic here
	a := &issueOp{ctx: noCtx, cert: logged("ac01", now), now: now, done: make(chan struct{})}
	b := &issueOp{ctx: ctx, cert: logged("ac02", now), now: now, done: make(chan struct{})}
	func() {
		defer func() { recover() }()
		db.commitBatch([]*issueOp{a, b})
	}()
	<-b.done
	if b.err == nil {
		t.Fatal("an op of a batch that panicked was answered as recorded")
	}
	func() {
		defer func() { recover() }()
		db.RecordIssuance(noCtx, logged("ac03", now), "", now)
	}()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := db.RecordIssuance(wctx, logged("ac04", now), "", now); err != nil {
		t.Fatalf("an issuance after a leader panicked: %v", err)
	}
}
