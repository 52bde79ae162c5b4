package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// logBatch carries the log's state through one transaction that appends
// several entries (group commit): the lock is taken once, the size read
// once, and the hashes just written are reused rather than read back.
type logBatch struct {
	locked bool
	known  bool
	dirty  bool
	size   int64
	hashes map[int64]tlog.Hash
}

// logError marks a failure in the middle of a log append: the transaction
// cannot be trusted any more and is abandoned as a whole.
type logError struct{ error }

func (e logError) Unwrap() error { return e.error }

// appendLog appends data to the issuance log inside tx and returns its
// index. On PostgreSQL an advisory lock serializes appends across replicas,
// so the log has one order, that of the database.
func (db *DB) appendLog(ctx context.Context, tx *sql.Tx, lb *logBatch, data []byte) (int64, error) {
	if err := db.lockLog(ctx, tx, lb); err != nil {
		return 0, err
	}
	if !lb.known {
		if err := tx.QueryRowContext(ctx, "SELECT size FROM log_state WHERE id = 1").Scan(&lb.size); err != nil {
			return 0, fmt.Errorf("read log size: %w", err)
		}
		lb.known = true
		lb.hashes = map[int64]tlog.Hash{}
	}
	n := lb.size
	hashes, err := tlog.StoredHashes(n, data, batchHashReader{txHashReader{ctx: ctx, db: db, tx: tx}, lb})
	if err != nil {
		return 0, fmt.Errorf("log hashes: %w", err)
	}
	if _, err := db.txExec(ctx, tx, db.q.rebind("INSERT INTO log_entries (idx, data) VALUES (?, ?)"), n, data); err != nil {
		return 0, fmt.Errorf("append log entry %d: %w", n, err)
	}
	base := tlog.StoredHashIndex(0, n)
	marks := make([]string, len(hashes))
	args := make([]any, 0, 2*len(hashes))
	for i, h := range hashes {
		marks[i] = "(?, ?)"
		args = append(args, base+int64(i), h[:])
		lb.hashes[base+int64(i)] = h
	}
	if _, err := db.txExec(ctx, tx, db.q.rebind("INSERT INTO log_hashes (id, hash) VALUES "+strings.Join(marks, ", ")), args...); err != nil {
		return 0, fmt.Errorf("append log hashes: %w", err)
	}
	lb.size, lb.dirty = n+1, true
	return n, nil
}

// lockLog takes the log's lock for the rest of tx, once. The wait is
// bounded by the session's lock_timeout: a replica that holds the lock and
// stopped (SIGSTOP, a VM pause) costs the others a bounded stall, until
// PostgreSQL ends its transaction (idle_in_transaction_session_timeout).
func (db *DB) lockLog(ctx context.Context, tx *sql.Tx, lb *logBatch) error {
	if lb.locked {
		return nil
	}
	if db.kind == "postgres" {
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(7105294005)"); err != nil {
			return fmt.Errorf("take the issuance log's lock: %w", err)
		}
	}
	lb.locked = true
	return nil
}

// flush records the log's new size.
func (db *DB) flushLog(ctx context.Context, tx *sql.Tx, lb *logBatch) error {
	if !lb.dirty {
		return nil
	}
	if _, err := tx.ExecContext(ctx, db.q.rebind("UPDATE log_state SET size = ? WHERE id = 1"), lb.size); err != nil {
		return fmt.Errorf("grow log: %w", err)
	}
	return nil
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
	if err := db.reader.QueryRowContext(ctx, "SELECT size FROM log_state WHERE id = 1").Scan(&n); err != nil {
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
