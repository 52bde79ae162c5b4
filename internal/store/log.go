package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// logBatch carries the log's state through one transaction that appends
// several entries (group commit): the certificates are queued as they are
// recorded, and appendQueued sequences them all at the end, under the lock
// taken once, with the size read once and the hashes just computed reused
// rather than read back.
type logBatch struct {
	size   int64
	hashes map[int64]tlog.Hash
	queued []*Certificate
	// version is SQLite's data_version when the batch read the size, and
	// writer the mark of the connection it read it on (see openLog).
	version, writer int64
}

// queue notes c (recorded in this transaction) for the batch's log append.
func (lb *logBatch) queue(c *Certificate) { lb.queued = append(lb.queued, c) }

// next is the index the next certificate queued will have (SQLite, once
// openLog has read the size).
func (lb *logBatch) next() int64 { return lb.size + int64(len(lb.queued)) }

// logEdge is the issuance log's right edge as this process last committed
// it on SQLite: the size, the hashes of the complete subtrees at the right
// edge (all the next append builds on) and the writer connection's
// data_version then, which changes when any other connection (a mutual
// command on the same file) commits. A batch takes it only when the size
// and data_version it reads under its write lock are the same, so another
// writer's appends, or a log rewritten at the same size, send it back to
// the stored hashes; any batch that does not commit leaves none. The size
// is always the one read in the transaction: where the batch appends
// never comes from memory. data_version is counted per connection (a new
// one starts over), so the edge also names the writer connection it was
// read on (writerMark): one database/sql opened in place of a closed one
// may show the same version after another process rewrote the log.
type logEdge struct {
	size, version, writer int64
	hashes                map[int64]tlog.Hash
}

// The log's size, and SQLite's data_version: two prepared statements cost
// less than one that reads the pragma as a table (which parses it anew on
// every run).
const (
	logSizeQuery     = "SELECT size FROM log_state WHERE id = 1"
	dataVersionQuery = "PRAGMA data_version"
	writerMarkQuery  = "SELECT mark FROM temp.mutual_writer"
	createWriterMark = "CREATE TEMP TABLE IF NOT EXISTS mutual_writer (mark INTEGER NOT NULL)"
)

// openLog reads, at the start of a SQLite batch (under its write lock),
// the log's size, and takes the cached right edge if it still describes
// the stored log: the batch then reads no hashes.
func (db *DB) openLog(ctx context.Context, tx *sql.Tx, lb *logBatch) error {
	// Taken out, whatever happens next: only a commit puts one back.
	e := db.edge.Swap(nil)
	if err := db.txQueryRow(ctx, tx, logSizeQuery).Scan(&lb.size); err != nil {
		return fmt.Errorf("read log size: %w", err)
	}
	if err := db.txQueryRow(ctx, tx, dataVersionQuery).Scan(&lb.version); err != nil {
		return fmt.Errorf("read the store's data version: %w", err)
	}
	w, err := db.writerMark(ctx, tx)
	if err != nil {
		return err
	}
	lb.writer = w
	if e != nil && e.size == lb.size && e.version == lb.version && e.writer == lb.writer {
		lb.hashes = e.hashes
	}
	return nil
}

// writerMarks numbers the SQLite writer connections of this process.
var writerMarks atomic.Int64

// writerMark is the mark of the connection tx runs on, kept in a TEMP table
// (which only the connection that made it sees); a connection without one
// gets a new mark. A rolled-back batch takes its new mark with it, and the
// next batch makes another: the cached edge is dropped either way.
//
// Its query is prepared at Open, on the writer connection then (see
// prepareHot); on another, preparing it fails until a batch has made the
// table, which gives that connection its mark.
func (db *DB) writerMark(ctx context.Context, tx *sql.Tx) (int64, error) {
	var m int64
	err := db.txQueryRow(ctx, tx, writerMarkQuery).Scan(&m)
	if err == nil {
		return m, nil
	}
	m = writerMarks.Add(1)
	for _, q := range []string{createWriterMark, "DELETE FROM temp.mutual_writer"} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return 0, fmt.Errorf("mark the store's writer connection: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO temp.mutual_writer (mark) VALUES (?)", m); err != nil {
		return 0, fmt.Errorf("mark the store's writer connection: %w", err)
	}
	return m, nil
}

// keepEdge caches the right edge of the log lb committed (SQLite).
func (db *DB) keepEdge(lb *logBatch) {
	if lb.hashes == nil {
		return
	}
	e := &logEdge{size: lb.size, version: lb.version, writer: lb.writer, hashes: map[int64]tlog.Hash{}}
	for _, id := range edgeIndexes(lb.size) {
		h, ok := lb.hashes[id]
		if !ok {
			return
		}
		e.hashes[id] = h
	}
	db.edge.Store(e)
}

// appendQueued appends the entries of the certificates queued in tx to the
// issuance log, in order, and sets their LogIndex. On PostgreSQL one call
// of mutual_log_append does it under an advisory lock that serializes
// appends across replicas, so the log has one order, that of the database;
// it is the last lock the transaction takes, so its holder waits for
// nothing else, and it is held for that one round trip and the commit. On
// SQLite the single writer connection orders appends: openLog read the
// size (and recordIn stored each certificate's index), and the append is
// a few prepared statements (the older hashes the new ones build on,
// unless cached, entries and hashes preparedRows at a time, new size).
func (db *DB) appendQueued(ctx context.Context, tx *sql.Tx, lb *logBatch) error {
	if len(lb.queued) == 0 {
		return nil
	}
	if db.kind == "postgres" {
		return db.appendQueuedPG(ctx, tx, lb)
	}
	if lb.hashes == nil {
		if err := db.readEdge(ctx, tx, lb); err != nil {
			return err
		}
	}
	first := lb.size
	entries := make([]any, 0, 2*len(lb.queued))
	var hashArgs []any
	for _, c := range lb.queued {
		n := lb.size
		hashes, err := tlog.StoredHashes(n, c.LogEntry, batchHashReader{txHashReader{ctx: ctx, db: db, tx: tx}, lb})
		if err != nil {
			return fmt.Errorf("log hashes of entry %d: %w", n, err)
		}
		base := tlog.StoredHashIndex(0, n)
		for i, h := range hashes {
			lb.hashes[base+int64(i)] = h
			hashArgs = append(hashArgs, base+int64(i), h[:])
		}
		entries = append(entries, n, c.LogEntry)
		lb.size = n + 1
	}
	if err := db.writeQueued(ctx, tx, lb, first, entries, hashArgs); err != nil {
		return err
	}
	for i, c := range lb.queued {
		c.LogIndex = first + int64(i)
	}
	return nil
}

// appendLogBatch appends a batch in one call (migration 0010): the lock,
// the size, the hashes and the writes happen in the database.
const appendLogBatch = "SELECT mutual_log_append($1::bytea[], $2::text[])"

// appendQueuedPG is appendQueued on PostgreSQL: one round trip for the
// whole batch, so the log's lock is held for that call and the commit,
// however many replicas wait for it.
func (db *DB) appendQueuedPG(ctx context.Context, tx *sql.Tx, lb *logBatch) error {
	entries, serials := lb.args()
	var first int64
	if err := db.txQueryRow(ctx, tx, appendLogBatch, entries, serials).Scan(&first); err != nil {
		return fmt.Errorf("append %d entries to the issuance log: %w", len(entries), err)
	}
	lb.placed(first)
	return nil
}

// args are mutual_log_append's arguments for the queued certificates.
func (lb *logBatch) args() (entries [][]byte, serials []string) {
	entries = make([][]byte, len(lb.queued))
	serials = make([]string, len(lb.queued))
	for i, c := range lb.queued {
		entries[i], serials[i] = c.LogEntry, c.Serial
	}
	return entries, serials
}

// placed sets the queued certificates' LogIndex, the first at first.
func (lb *logBatch) placed(first int64) {
	lb.size = first + int64(len(lb.queued))
	for i, c := range lb.queued {
		c.LogIndex = first + int64(i)
	}
}

// syncLog waits, after the commit of a batch appended on PostgreSQL, until
// that commit is on disk: mutual_log_append commits without waiting for the
// WAL's flush, so that the log's lock is not held across it, and nothing
// of the batch may be answered before this returns.
func (db *DB) syncLog(ctx context.Context, lb *logBatch) error {
	if db.kind != "postgres" || len(lb.queued) == 0 {
		return nil
	}
	var err error
	if st, ok := db.stmts.Load(stmtKey{db.writer, syncLogQuery}); ok {
		_, err = st.(*sql.Stmt).ExecContext(ctx)
	} else {
		_, err = db.writer.ExecContext(ctx, syncLogQuery)
	}
	if err != nil {
		return fmt.Errorf("wait for the issuance log's commit to reach the disk (it may or may not have; retry): %w", err)
	}
	return nil
}

const syncLogQuery = "SELECT mutual_log_sync()"

// edgeIndexes are the storage indexes of the complete subtrees at the
// right edge of a log of size entries, one per bit set in size.
func edgeIndexes(size int64) []int64 {
	var edge []int64
	for k := 0; size>>k > 0; k++ {
		if (size>>k)&1 == 1 {
			edge = append(edge, tlog.StoredHashIndex(k, size>>k-1))
		}
	}
	return edge
}

// readEdge reads the complete subtrees at the right edge of the log of
// lb.size entries in one query: the hashes the batch's new ones build on.
func (db *DB) readEdge(ctx context.Context, tx *sql.Tx, lb *logBatch) error {
	lb.hashes = map[int64]tlog.Hash{}
	edge := edgeIndexes(lb.size)
	hs, err := readHashes(ctx, db, tx, edge)
	if err != nil {
		return fmt.Errorf("read the log's right edge at size %d: %w", lb.size, err)
	}
	for i, id := range edge {
		lb.hashes[id] = hs[i]
	}
	return nil
}

// Statements of writeQueued (SQLite), all prepared at Open (see
// hotWrites): the inserts of 1 to preparedRows rows, which larger batches
// take in turns rather than parse a statement of their own size.
const (
	updateLogSize = "UPDATE log_state SET size = ? WHERE id = 1"
	preparedRows  = 16
)

var (
	insertLogEntries = rowInserts("INSERT INTO log_entries (idx, data) VALUES ")
	insertLogHashes  = rowInserts("INSERT INTO log_hashes (id, hash) VALUES ")
)

// rowInserts are insert with 1 to preparedRows rows of two values, by
// number of rows.
func rowInserts(insert string) []string {
	qs := make([]string, preparedRows+1)
	for n := 1; n <= preparedRows; n++ {
		qs[n] = insert + marks(n, "(?, ?)")
	}
	return qs
}

// insertPairs inserts the rows of args (two values each) with inserts,
// preparedRows at a time.
func (db *DB) insertPairs(ctx context.Context, tx *sql.Tx, inserts []string, args []any) error {
	for len(args) > 0 {
		n := min(len(args)/2, preparedRows)
		if _, err := db.txExec(ctx, tx, inserts[n], args[:2*n]...); err != nil {
			return err
		}
		args = args[2*n:]
	}
	return nil
}

// writeQueued writes the batch's entries [first, lb.size), their hashes
// and the new size (SQLite: the certificates carry their log indexes from
// recordIn).
func (db *DB) writeQueued(ctx context.Context, tx *sql.Tx, lb *logBatch, first int64, entries, hashes []any) error {
	if err := db.insertPairs(ctx, tx, insertLogEntries, entries); err != nil {
		return fmt.Errorf("append log entries %d-%d: %w", first, lb.size-1, err)
	}
	if err := db.insertPairs(ctx, tx, insertLogHashes, hashes); err != nil {
		return fmt.Errorf("append log hashes of entries %d-%d: %w", first, lb.size-1, err)
	}
	if _, err := db.txExec(ctx, tx, updateLogSize, lb.size); err != nil {
		return fmt.Errorf("grow log to %d: %w", lb.size, err)
	}
	return nil
}

// marks is n copies of mark, comma-separated.
func marks(n int, mark string) string {
	return strings.TrimSuffix(strings.Repeat(mark+", ", n), ", ")
}

// batchHashReader reads hashes written earlier in the batch from memory,
// the rest from the database.
type batchHashReader struct {
	db txHashReader
	lb *logBatch
}

func (r batchHashReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	var missing []int64
	var pos []int
	for i, id := range indexes {
		if h, ok := r.lb.hashes[id]; ok {
			out[i] = h
		} else {
			missing = append(missing, id)
			pos = append(pos, i)
		}
	}
	if len(missing) > 0 {
		hs, err := r.db.ReadHashes(missing)
		if err != nil {
			return nil, err
		}
		for j, i := range pos {
			out[i] = hs[j]
		}
	}
	return out, nil
}

// txHashReader reads stored hashes inside a transaction.
type txHashReader struct {
	ctx context.Context
	db  *DB
	tx  *sql.Tx
}

func (r txHashReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	return readHashes(r.ctx, r.db, r.tx, indexes)
}

type queryer interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

func readHashes(ctx context.Context, db *DB, q queryer, indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	if len(indexes) == 0 {
		return out, nil
	}
	pos := make(map[int64][]int, len(indexes))
	args := make([]any, 0, len(indexes))
	for i, id := range indexes {
		if _, ok := pos[id]; !ok {
			args = append(args, id)
		}
		pos[id] = append(pos[id], i)
	}
	marks := strings.TrimSuffix(strings.Repeat("?,", len(args)), ",")
	rows, err := q.QueryContext(ctx, db.q.rebind("SELECT id, hash FROM log_hashes WHERE id IN ("+marks+")"), args...)
	if err != nil {
		return nil, fmt.Errorf("read log hashes: %w", err)
	}
	defer rows.Close()
	found := 0
	for rows.Next() {
		var id int64
		var h []byte
		if err := rows.Scan(&id, &h); err != nil {
			return nil, err
		}
		if len(h) != tlog.HashSize {
			return nil, fmt.Errorf("log hash %d is damaged", id)
		}
		for _, i := range pos[id] {
			copy(out[i][:], h)
		}
		found++
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if found != len(args) {
		return nil, fmt.Errorf("log hashes missing: %w", ErrNotFound)
	}
	return out, nil
}

// ReadHashes reads stored log hashes by their tlog storage index: a
// tlog.HashReader for proofs and tiles.
func (db *DB) ReadHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error) {
	return readHashes(ctx, db, db.reader, indexes)
}

// LogSize returns the number of entries in the issuance log.
func (db *DB) LogSize(ctx context.Context) (int64, error) {
	var n int64
	if err := db.reader.QueryRowContext(ctx, logSizeQuery).Scan(&n); err != nil {
		return 0, fmt.Errorf("read log size: %w", err)
	}
	return n, nil
}

// LogEntries returns the entries with indexes in [start, end).
func (db *DB) LogEntries(ctx context.Context, start, end int64) ([][]byte, error) {
	rows, err := db.reader.QueryContext(ctx, db.q.rebind("SELECT idx, data FROM log_entries WHERE idx >= ? AND idx < ? ORDER BY idx"), start, end)
	if err != nil {
		return nil, fmt.Errorf("read log entries: %w", err)
	}
	defer rows.Close()
	var out [][]byte
	next := start
	for rows.Next() {
		var idx int64
		var data []byte
		if err := rows.Scan(&idx, &data); err != nil {
			return nil, err
		}
		if idx != next {
			return nil, fmt.Errorf("log entry %d missing", next)
		}
		next++
		out = append(out, data)
	}
	return out, rows.Err()
}

// Checkpoint is a signed tree head.
type Checkpoint struct {
	Size      int64
	RootHash  []byte
	Note      string
	CreatedAt time.Time
}

// SaveCheckpoint stores a signed checkpoint; one of a given size already
// stored wins (replicas sign the same tree the same way).
func (db *DB) SaveCheckpoint(ctx context.Context, c Checkpoint) error {
	_, err := db.writer.ExecContext(ctx, db.q.rebind(`INSERT INTO log_checkpoints (size, root_hash, note, created_at_us) VALUES (?, ?, ?, ?)
		ON CONFLICT (size) DO NOTHING`), c.Size, c.RootHash, c.Note, toUS(c.CreatedAt))
	if err != nil {
		return fmt.Errorf("store checkpoint %d: %w", c.Size, err)
	}
	return nil
}

// LatestCheckpoint returns the largest checkpoint, or ErrNotFound.
func (db *DB) LatestCheckpoint(ctx context.Context) (Checkpoint, error) {
	var c Checkpoint
	var at int64
	err := db.reader.QueryRowContext(ctx, "SELECT size, root_hash, note, created_at_us FROM log_checkpoints ORDER BY size DESC LIMIT 1").
		Scan(&c.Size, &c.RootHash, &c.Note, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return c, fmt.Errorf("checkpoint: %w", ErrNotFound)
	}
	if err != nil {
		return c, fmt.Errorf("read checkpoint: %w", err)
	}
	c.CreatedAt = fromUS(at)
	return c, nil
}

// LogIndexOf returns the log index of the certificate with serial.
func (db *DB) LogIndexOf(ctx context.Context, serial string) (int64, error) {
	var idx sql.NullInt64
	err := db.reader.QueryRowContext(ctx, db.q.rebind("SELECT log_index FROM certificates WHERE serial = ?"), serial).Scan(&idx)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !idx.Valid) {
		return 0, fmt.Errorf("certificate %s in the log: %w", serial, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("read certificate %s: %w", serial, err)
	}
	return idx.Int64, nil
}
