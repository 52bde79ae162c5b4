package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/mutual-tls/mutual/internal/pgtest"
)

// statementLog records, per connection, the round trips to PostgreSQL and
// the statements each carried: a pgx.QueryTracer (a query, one round trip)
// and pgx.BatchTracer (a pipeline of statements, one round trip).
type statementLog struct {
	mu     sync.Mutex
	byConn map[*pgx.Conn][][]string
}

func (l *statementLog) TraceQueryStart(ctx context.Context, conn *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byConn[conn] = append(l.byConn[conn], []string{normalize(d.SQL)})
	return ctx
}

func (l *statementLog) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (l *statementLog) TraceBatchStart(ctx context.Context, conn *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byConn[conn] = append(l.byConn[conn], nil)
	return ctx
}

func (l *statementLog) TraceBatchQuery(_ context.Context, conn *pgx.Conn, d pgx.TraceBatchQueryData) {
	l.mu.Lock()
	defer l.mu.Unlock()
	trips := l.byConn[conn]
	trips[len(trips)-1] = append(trips[len(trips)-1], normalize(d.SQL))
	if d.SQL == consumeAndCheck {
		for _, tok := range d.Args[0].([]string) {
			if tok != "" {
				trips[len(trips)-1] = append(trips[len(trips)-1], "(consume a token)")
			}
		}
	}
}

func (l *statementLog) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

func normalize(sql string) string { return strings.ToLower(strings.TrimSpace(sql)) }

// count returns how many times stmt was sent.
func (l *statementLog) count(stmt string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, trips := range l.byConn {
		for _, trip := range trips {
			for _, s := range trip {
				if s == stmt {
					n++
				}
			}
		}
	}
	return n
}

// batchTrips is what one issuing transaction sent.
type batchTrips struct {
	ops, total, underLock int
}

// batches splits each connection's round trips into the transactions
// that appended to the log: how many issuances each held, how many round
// trips it made in all and how many while it held the log's lock (from the
// append call, which takes it, to the commit, which releases it).
func (l *statementLog) batches() []batchTrips {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []batchTrips
	for _, trips := range l.byConn {
		var cur batchTrips
		in, locked := false, false
		for _, trip := range trips {
			for _, s := range trip {
				if s == "begin" || strings.HasPrefix(s, "begin ") {
					cur, in, locked = batchTrips{}, true, false
				}
			}
			if !in {
				continue
			}
			cur.total++
			end := false
			for _, s := range trip {
				// (The migration that creates the function mentions it too.)
				if strings.Contains(s, "mutual_log_append(") || strings.Contains(s, "mutual_issue_record(") || strings.Contains(s, "pg_advisory_xact_lock(7105294005)") {
					locked = true
				}
				// (Through a pooler, a statement per token; directly, a
				// marker per token of consumeAndCheck: see TraceBatchQuery.)
				if strings.HasPrefix(s, "update tokens set used_at_us = $1") || s == "(consume a token)" {
					cur.ops++
				}
				end = end || s == "commit" || s == "rollback"
			}
			if locked {
				cur.underLock++
			}
			if end {
				if locked && cur.ops > 0 {
					out = append(out, cur)
				}
				in = false
			}
		}
	}
	return out
}

// TestPostgresLogAppendRoundTrips counts, with a pgx tracer, the round
// trips of concurrent issuances on PostgreSQL: whatever a batch's size, it
// makes two (its checks and writes; the append and the commit) and holds
// the log's lock for the second only, then waits for the disk with one
// more, after the lock is released. And the
// tree the server-side append built is the one tlog builds from the same
// entries: every stored hash, at sizes that cross several levels.
func TestPostgresLogAppendRoundTrips(t *testing.T) {
	srv := pgtest.Start(t)
	trace := &statementLog{byConn: map[*pgx.Conn][][]string{}}
	pgTracer = trace
	url := srv.NewDatabase(t)
	db, err := Open(context.Background(), url)
	pgTracer = nil
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	now := time.Now()
	var entries [][]byte
	issued := 0
	// Rounds of concurrent issuances of growing size: batches of several
	// sizes, appended at log sizes odd and even.
	for round, n := range []int{1, 2, 3, 5, 8, 13, 21, 40} {
		var wg sync.WaitGroup
		errs := make(chan error, n)
		certs := make([]*Certificate, n)
		for i := range n {
			id := fmt.Sprintf("r%d-%d", round, i)
			if err := db.CreateToken(ctx, Token{ID: id, SecretHash: []byte("h"), SPIFFEID: "spiffe://td/w/" + id,
				CreatedAt: now, ExpiresAt: now.Add(time.Hour), CreatedBy: "test"}); err != nil {
				t.Fatal(err)
			}
			certs[i] = &Certificate{Serial: fmt.Sprintf("%02x%04x", round, i), SPIFFEID: "spiffe://td/w/" + id,
				NotBefore: now, NotAfter: now.Add(time.Hour), IssuedAt: now, DER: []byte{0x30, byte(i)},
				RequestedBy: "token:" + id, LogEntry: []byte("entry " + id), Check: &IssueCheck{TokenCreated: now}}
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- db.RecordIssuance(ctx, certs[i], id, now)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		byIndex := make([][]byte, n)
		for _, c := range certs {
			i := c.LogIndex - int64(issued)
			if i < 0 || i >= int64(n) || byIndex[i] != nil {
				t.Fatalf("certificate %s got log index %d, outside the round's [%d, %d) or taken twice", c.Serial, c.LogIndex, issued, issued+n)
			}
			byIndex[i] = c.LogEntry
			if stored, err := db.LogIndexOf(ctx, c.Serial); err != nil || stored != c.LogIndex {
				t.Fatalf("certificate %s: stored log index %d (%v), answered %d", c.Serial, stored, err, c.LogIndex)
			}
		}
		entries = append(entries, byIndex...)
		issued += n
	}
	checkTree(t, db, entries)

	bs := trace.batches()
	if len(bs) == 0 {
		t.Fatal("the tracer saw no transaction append to the log")
	}
	if syncs := trace.count("select mutual_log_sync()"); syncs != len(bs) {
		t.Errorf("%d waits for the disk after %d appending batches, want one each", syncs, len(bs))
	}
	ops := 0
	for _, b := range bs {
		ops += b.ops
		if b.underLock != 1 || b.total != 2 {
			t.Errorf("a batch of %d issuances made %d round trips, %d under the log's lock; want 2, 1 (append and commit pipelined)", b.ops, b.total, b.underLock)
		}
	}
	if ops != issued {
		t.Errorf("the tracer saw %d tokens consumed by appending transactions, want %d", ops, issued)
	}
	t.Logf("%d issuances in %d batches; round trips per batch: %+v", issued, len(bs), bs)

	refusalsInABatch(t, db, now)
	entries = append(entries, []byte("entry good"))
	checkTree(t, db, entries)

	// Two replicas record the same certificate at once (as they import
	// their own at start): one stores and logs it, the other is told it
	// exists, and the log holds it once.
	other, err := Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for i := range 10 {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for k, d := range []*DB{db, other} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[k] = d.RecordIssuance(ctx, &Certificate{Serial: fmt.Sprintf("aa%02x", i), SPIFFEID: "spiffe://td/imported",
					NotBefore: now, NotAfter: now.Add(time.Hour), IssuedAt: now, DER: []byte{0x30}, RequestedBy: "import",
					LogEntry: []byte(fmt.Sprintf("imported %d", i))}, "", now)
			}()
		}
		wg.Wait()
		if (errs[0] == nil) == (errs[1] == nil) || !(errors.Is(errs[0], ErrAlreadyExists) || errors.Is(errs[1], ErrAlreadyExists)) {
			t.Fatalf("the same certificate recorded by two replicas at once: %v and %v, want one stored and one ErrAlreadyExists", errs[0], errs[1])
		}
		entries = append(entries, []byte(fmt.Sprintf("imported %d", i)))
	}
	checkTree(t, db, entries)
}

// checkTree compares every hash stored in db with those tlog computes from
// entries, and the log's size and entries with entries.
func checkTree(t *testing.T, db *DB, entries [][]byte) {
	t.Helper()
	ctx := context.Background()
	size, err := db.LogSize(ctx)
	if err != nil || size != int64(len(entries)) {
		t.Fatalf("log size %d (%v), want %d", size, err, len(entries))
	}
	stored, err := db.LogEntries(ctx, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int64]tlog.Hash{}
	reader := tlog.HashReaderFunc(func(ids []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(ids))
		for i, id := range ids {
			out[i] = want[id]
		}
		return out, nil
	})
	for n, e := range entries {
		if !bytes.Equal(stored[n], e) {
			t.Fatalf("log entry %d is %q, want %q", n, stored[n], e)
		}
		hs, err := tlog.StoredHashes(int64(n), e, reader)
		if err != nil {
			t.Fatal(err)
		}
		for i, h := range hs {
			want[tlog.StoredHashIndex(0, int64(n))+int64(i)] = h
		}
	}
	ids := make([]int64, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	got, err := db.ReadHashes(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if got[i] != want[id] {
			t.Fatalf("stored hash %d is %x, tlog computes %x", id, got[i], want[id])
		}
	}
	var rows int64
	if err := db.reader.QueryRowContext(ctx, "SELECT count(*) FROM log_hashes").Scan(&rows); err != nil || rows != int64(len(want)) {
		t.Fatalf("%d stored hashes (%v), want %d", rows, err, len(want))
	}
}

// refusalsInABatch issues, at once, one good certificate and four that
// are refused after the pipeline wrote for them (a used token, a serial
// taken, with and without a token, an identity revoked after its token
// was made): each refusal says why and leaves nothing behind (the tokens
// it consumed unused again), and the good one is logged.
func refusalsInABatch(t *testing.T, db *DB, now time.Time) {
	t.Helper()
	ctx := context.Background()
	// The revoked identity is that of round 0's first certificate.
	for id, spiffeID := range map[string]string{"good": "spiffe://td/w/good", "revoked": "spiffe://td/w/r0-0", "taken": "spiffe://td/w/taken"} {
		if err := db.CreateToken(ctx, Token{ID: id, SecretHash: []byte("h"), SPIFFEID: spiffeID,
			CreatedAt: now, ExpiresAt: now.Add(time.Hour), CreatedBy: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.RevokeIdentity(ctx, "spiffe://td/w/r0-0", 1, now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	mk := func(serial, id string) *Certificate {
		return &Certificate{Serial: serial, SPIFFEID: "spiffe://td/w/" + id, NotBefore: now, NotAfter: now.Add(time.Hour),
			IssuedAt: now, DER: []byte{0x30}, RequestedBy: "token:" + id, LogEntry: []byte("entry " + id),
			Check: &IssueCheck{TokenCreated: now}}
	}
	cases := []struct {
		cert  *Certificate
		token string
		want  error
	}{
		{mk("ff0001", "good"), "good", nil},
		{mk("ff0002", "r0-0"), "r0-0", ErrTokenUsed},
		{mk("000000", "dup"), "", ErrAlreadyExists},
		{mk("000000", "taken"), "taken", ErrAlreadyExists},
		{mk("ff0003", "r0-0"), "revoked", ErrRevoked},
	}
	errs := make([]error, len(cases))
	var wg sync.WaitGroup
	for i, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = db.RecordIssuance(ctx, c.cert, c.token, now)
		}()
	}
	wg.Wait()
	for i, c := range cases {
		if (c.want == nil) != (errs[i] == nil) || (c.want != nil && !errors.Is(errs[i], c.want)) {
			t.Errorf("issuance %s: %v, want %v", c.cert.Serial, errs[i], c.want)
		}
	}
	for _, serial := range []string{"ff0002", "ff0003"} {
		if _, err := db.GetCertificate(ctx, serial); !errors.Is(err, ErrNotFound) {
			t.Errorf("refused certificate %s: stored (%v)", serial, err)
		}
	}
	if c, err := db.GetCertificate(ctx, "000000"); err != nil || c.SPIFFEID != "spiffe://td/w/r0-0" {
		t.Errorf("certificate 000000 after a refused duplicate: %+v, %v", c, err)
	}
	for _, id := range []string{"revoked", "taken"} {
		if tok, err := db.GetToken(ctx, id); err != nil || !tok.UsedAt.IsZero() {
			t.Errorf("token %s of a refused issuance: used at %v (%v), want unused", id, tok.UsedAt, err)
		}
	}
	if tok, err := db.GetToken(ctx, "r0-0"); err != nil || tok.UsedSerial != "000000" {
		t.Errorf("token r0-0 after a refused reuse: used by %q (%v), want 000000", tok.UsedSerial, err)
	}
}

// TestRefusalsInABatchSQLite: on SQLite too, refusals after writes undo
// them, without savepoints, and leave the batch's other issuances alone.
func TestRefusalsInABatchSQLite(t *testing.T) {
	db, err := Open(context.Background(), "sqlite:"+t.TempDir()+"/mutual.db")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	now := time.Now()
	if err := db.CreateToken(ctx, Token{ID: "r0-0", SecretHash: []byte("h"), SPIFFEID: "spiffe://td/w/r0-0",
		CreatedAt: now, ExpiresAt: now.Add(time.Hour), CreatedBy: "test"}); err != nil {
		t.Fatal(err)
	}
	c := &Certificate{Serial: "000000", SPIFFEID: "spiffe://td/w/r0-0", NotBefore: now, NotAfter: now.Add(time.Hour),
		IssuedAt: now, DER: []byte{0x30}, RequestedBy: "token:r0-0", LogEntry: []byte("entry r0-0"), Check: &IssueCheck{TokenCreated: now}}
	if err := db.RecordIssuance(ctx, c, "r0-0", now); err != nil {
		t.Fatal(err)
	}
	refusalsInABatch(t, db, now)
	checkTree(t, db, [][]byte{[]byte("entry r0-0"), []byte("entry good")})
}
