package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrDamaged marks a store that cannot be trusted any more: its file is
// corrupt, not a database, or was deleted or replaced under the running CA.
// Retrying does not help; the operator restores it from a backup.
var ErrDamaged = errors.New("the store is damaged: restore it from backup")

// Options change how Open treats the store. The zero value creates a
// missing SQLite file, as a first start needs.
type Options struct {
	// MustExist refuses a SQLite file that is missing or empty instead of
	// creating a fresh store in its place: set it once the CA has issued,
	// so that a lost file is not silently replaced by an empty one.
	MustExist bool
}

// PostgreSQL session settings added to the URL unless it sets them: a peer
// that stops while it holds a lock (a frozen replica) costs the others a
// bounded stall, and its transaction is ended by the server.
var pgSessionDefaults = map[string]string{
	// A lock wait (the log's advisory lock, a token row) fails after this.
	"lock_timeout": "3000",
	// A session that stops talking in the middle of a transaction (a
	// SIGSTOPped or paused replica holding the log lock) is terminated and
	// its locks freed.
	"idle_in_transaction_session_timeout": "5000",
	// No single statement runs longer than this.
	"statement_timeout": "60000",
}

// healthProbeLockTimeout bounds how long a health check waits for the
// issuance log's lock on PostgreSQL.
const healthProbeLockTimeout = "2s"

// fileIdentity names the SQLite file the store opened, to notice it being
// deleted or replaced under the running CA.
type fileIdentity struct {
	path string
	dev  uint64
	ino  uint64
	f    *os.File // kept open, so that its inode number is not reused by another file
}

func statIdentity(path string) (*fileIdentity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, err
	}
	return &fileIdentity{path: path, dev: uint64(st.Dev), ino: st.Ino, f: f}, nil
}

// check reports an ErrDamaged error when the file was unlinked or another
// file now has its name.
func (fi *fileIdentity) check() error {
	var st syscall.Stat_t
	if err := syscall.Stat(fi.path, &st); err != nil {
		return fmt.Errorf("store sqlite:%s was deleted while the CA was running (%v); writes since then are lost when it stops: "+
			"stop the CA and restore the file from backup: %w", fi.path, err, ErrDamaged)
	}
	// A name that still leads to the file opened is a link to it: the file
	// is not unlinked (it is checked before every commit, so one stat).
	if uint64(st.Dev) != fi.dev || st.Ino != fi.ino {
		return fmt.Errorf("store sqlite:%s was replaced by another file while the CA was running: "+
			"stop the CA, then restart it on the file that holds its log: %w", fi.path, ErrDamaged)
	}
	return nil
}

// health is the store's view of whether it can take writes.
type health struct {
	damaged  atomic.Pointer[error] // sticky: set once corruption is seen
	lastOK   atomic.Int64          // unix nanoseconds of the last committed batch
	lastErr  atomic.Pointer[error] // the last batch failure, cleared by a commit
	lockWait atomic.Int64          // unix nanoseconds since a batch waits for the log lock, or 0
	probeMu  sync.Mutex
	probeAt  time.Time
	probeErr error
}

// isCorruption reports whether err means the database file itself is
// damaged (SQLite's CORRUPT or NOTADB, PostgreSQL's data_corrupted and
// index_corrupted), as opposed to the store being busy or unreachable.
func isCorruption(err error) bool {
	var se interface{ Code() int }
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case 11, 26: // SQLITE_CORRUPT, SQLITE_NOTADB
			return true
		}
	}
	var pe interface{ SQLState() string }
	if errors.As(err, &pe) {
		switch pe.SQLState() {
		case "XX001", "XX002": // data_corrupted, index_corrupted
			return true
		}
	}
	return false
}

// IsDamage reports whether err means the store is damaged (ErrDamaged, or
// a database error that says its file or pages are corrupt): an answer
// that must say "restore from backup", never "retry".
func IsDamage(err error) bool { return errors.Is(err, ErrDamaged) || isCorruption(err) }

// noteError records err from a write or read; corruption makes the store
// damaged for good. It returns err, wrapped with ErrDamaged when it is.
func (db *DB) noteError(err error) error {
	if err == nil || errors.Is(err, ErrDamaged) || !isCorruption(err) {
		return err
	}
	d := fmt.Errorf("store %s: %v: %w", db.name, err, ErrDamaged)
	db.health.damaged.CompareAndSwap(nil, &d)
	return fmt.Errorf("%w (%v)", ErrDamaged, err)
}

// Damaged returns the ErrDamaged error the store has seen, or nil.
func (db *DB) Damaged() error {
	if p := db.health.damaged.Load(); p != nil {
		return *p
	}
	if db.file != nil {
		if err := db.file.check(); err != nil {
			db.health.damaged.CompareAndSwap(nil, &err)
			return err
		}
	}
	return nil
}

func (db *DB) batchDone(err error) {
	if err == nil {
		db.health.lastOK.Store(time.Now().UnixNano())
		db.health.lastErr.Store(nil)
		return
	}
	db.health.lastErr.Store(&err)
}

// Health reports whether the store can record an issuance now: it is not
// damaged, and either a batch committed in the last second or a real write
// succeeds (on PostgreSQL, under the issuance log's lock taken within a
// bound, so a replica that cannot append to the log says so). Concurrent
// calls share one probe, and a probe's answer is reused for a second.
func (db *DB) Health(ctx context.Context) error {
	if err := db.Damaged(); err != nil {
		return err
	}
	if since := db.health.lockWait.Load(); since != 0 {
		if d := time.Since(time.Unix(0, since)); d > time.Second {
			return fmt.Errorf("store %s cannot record an issuance: waiting %s for the issuance log's lock, which another replica holds "+
				"(if it is frozen, PostgreSQL ends its transaction after idle_in_transaction_session_timeout)", db.kind, d.Round(time.Millisecond))
		}
	}
	if time.Since(time.Unix(0, db.health.lastOK.Load())) < time.Second && db.health.lastErr.Load() == nil {
		return nil
	}
	h := &db.health
	h.probeMu.Lock()
	defer h.probeMu.Unlock()
	if time.Since(h.probeAt) < time.Second {
		return h.probeErr
	}
	err := db.probeWrite(ctx)
	if err != nil {
		err = db.noteError(err)
		if !errors.Is(err, ErrDamaged) {
			err = fmt.Errorf("store %s cannot record an issuance: %w", db.kind, err)
		}
	}
	h.probeAt, h.probeErr = time.Now(), err
	return err
}

// probeWrite commits a write that leaves the data as it was, through the
// path an issuance takes.
func (db *DB) probeWrite(ctx context.Context) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if db.kind == "postgres" {
		if _, err := tx.ExecContext(ctx, "SET LOCAL lock_timeout = '"+healthProbeLockTimeout+"'"); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(7105294005)"); err != nil {
			return fmt.Errorf("take the issuance log's lock within %s (another replica holds it; if it is frozen, "+
				"PostgreSQL ends its transaction after idle_in_transaction_session_timeout): %w", healthProbeLockTimeout, err)
		}
	}
	// Two updates that cancel out: SQLite skips a write of identical bytes,
	// so one "SET size = size" would commit nothing and prove nothing.
	for range 2 {
		if _, err := tx.ExecContext(ctx, "UPDATE log_state SET size = -size - 1 WHERE id = 1"); err != nil {
			return err
		}
	}
	if db.file != nil {
		if err := db.file.check(); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// checkIntegrity runs SQLite's quick_check: a damaged file is refused at
// start rather than served until a query trips over it.
func checkIntegrity(ctx context.Context, w *sql.DB) error {
	rows, err := w.QueryContext(ctx, "PRAGMA quick_check")
	if err != nil {
		return err
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return err
		}
		if s != "ok" && len(problems) < 5 {
			problems = append(problems, s)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(problems) > 0 {
		return fmt.Errorf("integrity check failed (%v): %w", problems, ErrDamaged)
	}
	return nil
}
