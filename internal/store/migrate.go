package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// A migration is one file of migrations/DIALECT, NNNN_name.sql, applied
// once, in number order, under an advisory lock on PostgreSQL so that
// replicas starting together take turns. The pending migrations run in one
// transaction, except on PostgreSQL a migration whose first line is
// noTransaction: it runs outside any transaction (the ones before it
// commit first), one statement at a time, so that it can build an index
// with CREATE INDEX CONCURRENTLY and leave certificate inserts running
// while the index builds. Such a migration must be safe to run again
// after a failure part-way: every statement idempotent (IF NOT EXISTS),
// statements ending with ";" at the end of a line, no dollar quoting. An
// index that a failed CREATE INDEX CONCURRENTLY IF NOT EXISTS left invalid
// is dropped before the statement runs again, and every index it names
// must be valid afterwards. Behind a transaction pooler (no session of its
// own for the lock) it runs inside the transaction, without CONCURRENTLY,
// as every migration did before. On SQLite the marker means nothing.
// (A replica of an earlier version waits for the lock inside a
// transaction, holding a snapshot that CREATE INDEX CONCURRENTLY waits
// for: PostgreSQL then fails one of the two as a deadlock, and starting
// it again completes.)
const noTransaction = "-- mutual:no-transaction"

// migrationLock is the advisory lock key of migrations (PostgreSQL).
const migrationLock = 7105294003

// migration is one migration file.
type migration struct {
	version int64
	name    string
	body    string
}

// outsideTx reports whether m asks to run outside a transaction.
func (m migration) outsideTx() bool { return strings.HasPrefix(m.body, noTransaction) }

// concurrentIndex finds the indexes a no-transaction migration builds:
// IF NOT EXISTS, when written, then the name as written.
var concurrentIndex = regexp.MustCompile(`(?i)CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(IF\s+NOT\s+EXISTS\s+)?([^\s(]+)`)

// indexName is an index name indexValid looks up as it is written: not
// quoted, in lower case (PostgreSQL folds an unquoted name to lower case,
// indexValid does not) and without a schema (looked up in the search
// path).
var indexName = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// checkIndexes refuses a no-transaction migration whose index builds
// could not be checked (see noTransaction): each must say IF NOT EXISTS
// and name its index as indexName says. Else every start would find the
// index missing and fail, or build it twice.
func (m migration) checkIndexes() error {
	if !m.outsideTx() {
		return nil
	}
	for _, sub := range concurrentIndex.FindAllStringSubmatch(m.body, -1) {
		if sub[1] == "" {
			return fmt.Errorf("migration file %s: CREATE INDEX CONCURRENTLY %s: write IF NOT EXISTS, so that the migration can run again", m.name, sub[2])
		}
		if !indexName.MatchString(sub[2]) {
			return fmt.Errorf("migration file %s: index name %q: write it unquoted, in lower case, without a schema (the search path's)", m.name, sub[2])
		}
	}
	return nil
}

// concurrently is the word that asks for a build outside a transaction.
var concurrently = regexp.MustCompile(`(?i)\s+CONCURRENTLY\b`)

// statements splits a no-transaction migration into its statements.
func (m migration) statements() []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(m.body, "\n") {
		if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line + "\n")
		if strings.HasSuffix(strings.TrimSpace(line), ";") {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	if strings.TrimSpace(cur.String()) != "" {
		out = append(out, cur.String())
	}
	return out
}

// readMigrations reads dir's migrations in number order.
func readMigrations(fsys fs.FS, dir string) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	out := make([]migration, 0, len(entries))
	for _, e := range entries {
		v, err := strconv.ParseInt(strings.SplitN(e.Name(), "_", 2)[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("migration file %s: name must start with a number", e.Name())
		}
		body, err := fs.ReadFile(fsys, dir+"/"+e.Name())
		if err != nil {
			return nil, err
		}
		m := migration{version: v, name: e.Name(), body: string(body)}
		if err := m.checkIndexes(); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// migrate brings the store's schema up to date (see noTransaction).
func (db *DB) migrate(ctx context.Context) error {
	ms, err := readMigrations(migrations, "migrations/"+db.kind)
	if err != nil {
		return err
	}
	return db.apply(ctx, ms)
}

// apply applies the migrations of ms not applied yet.
func (db *DB) apply(ctx context.Context, ms []migration) error {
	var err error
	if db.kind == "postgres" && !db.pooled {
		err = db.migrateSession(ctx, ms)
	} else {
		err = db.migrateInTx(ctx, ms)
	}
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// schemaVersion creates the table of applied migrations if needed and
// reads the newest applied; it refuses a schema newer than ms.
func schemaVersion(ctx context.Context, ex execQueryer, ms []migration) (int64, error) {
	if _, err := ex.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at_us BIGINT NOT NULL)`); err != nil {
		return 0, err
	}
	var current int64
	if err := ex.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&current); err != nil {
		return 0, err
	}
	if known := ms[len(ms)-1].version; current > known {
		return 0, fmt.Errorf("the database schema is version %d but this mutual knows only up to %d: upgrade mutual", current, known)
	}
	return current, nil
}

// execQueryer is what a migration runs on: a transaction or a connection.
type execQueryer interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

// applyIn runs m's body on ex and notes it applied.
func (db *DB) applyIn(ctx context.Context, ex execQueryer, m migration) error {
	body := m.body
	if m.outsideTx() {
		// Inside a transaction (SQLite, or behind a pooler): the index
		// builds as before, blocking writes to its table meanwhile.
		body = concurrently.ReplaceAllString(body, "")
		if db.kind == "postgres" {
			if err := dropInvalid(ctx, ex, m, ""); err != nil {
				return err
			}
		}
	}
	if _, err := ex.ExecContext(ctx, body); err != nil {
		return fmt.Errorf("migration %s: %w", m.name, err)
	}
	return noteApplied(ctx, db, ex, m)
}

// noteApplied records m as applied.
func noteApplied(ctx context.Context, db *DB, ex execQueryer, m migration) error {
	if _, err := ex.ExecContext(ctx, db.q.rebind("INSERT INTO schema_migrations (version, name, applied_at_us) VALUES (?, ?, ?)"),
		m.version, m.name, toUS(time.Now())); err != nil {
		return fmt.Errorf("migration %s: %w", m.name, err)
	}
	return nil
}

// migrateInTx applies the pending migrations of ms in one transaction:
// SQLite, and PostgreSQL behind a pooler (where the transaction-scoped
// lock is the only one that holds).
func (db *DB) migrateInTx(ctx context.Context, ms []migration) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if db.kind == "postgres" {
		// Replicas starting together take turns, however long another's
		// migration takes.
		if _, err := tx.ExecContext(ctx, "SET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = 0; SET LOCAL idle_in_transaction_session_timeout = 0"); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLock); err != nil {
			return err
		}
	}
	current, err := schemaVersion(ctx, tx, ms)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.version > current {
			if err := db.applyIn(ctx, tx, m); err != nil {
				return err
			}
		}
	}
	return tx.Commit()
}

// migrateSession applies the pending migrations of ms on one PostgreSQL
// connection holding the migration lock for its session: the
// transactional ones together, up to each no-transaction one, which runs
// by itself (see noTransaction). The connection is closed afterwards,
// never given back to the pool with the session's settings.
func (db *DB) migrateSession(ctx context.Context, ms []migration) (err error) {
	conn, err := db.writer.Conn(ctx)
	if err != nil {
		return err
	}
	defer func() {
		conn.Raw(func(any) error { return driver.ErrBadConn })
		conn.Close()
	}()
	pid, err := ownSession(ctx, conn)
	if err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, "SET lock_timeout = 0; SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0"); err != nil {
		return err
	}
	if err := lockMigrations(ctx, conn, pid); err != nil {
		return err
	}
	defer func() {
		// Unlocked on the server connection that holds the lock, or not
		// at all (an unlock elsewhere would leave it held).
		if uerr := unlockMigrations(context.WithoutCancel(ctx), conn, pid); uerr != nil {
			// Not errBehindPooler, whatever err was: the lock may be
			// held on a pooled server connection, so the in-transaction
			// path would wait for it for ever.
			err = fmt.Errorf("%w (after the migrations ended with: %v)", uerr, err)
		}
	}()
	current, err := schemaVersion(ctx, conn, ms)
	if err != nil {
		return err
	}
	var pending []migration
	for _, m := range ms {
		if m.version > current {
			pending = append(pending, m)
		}
	}
	for len(pending) > 0 {
		if pending[0].outsideTx() {
			if err := db.applyOutsideTx(ctx, conn, pending[0]); err != nil {
				return err
			}
			pending = pending[1:]
			continue
		}
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		for len(pending) > 0 && !pending[0].outsideTx() {
			if err := db.applyIn(ctx, tx, pending[0]); err != nil {
				tx.Rollback()
				return err
			}
			pending = pending[1:]
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// ownSession returns the process ID of conn's server connection after
// checking that conn is a session of its own, not a pooler's client
// connection whose transactions may each run on another server connection
// (a session lock taken on one would be released on another, or never):
// the process ID the server named at startup is the one that answers. A
// pooler (PgBouncer with ignore_startup_parameters, which the startup
// parameters do not reveal) names its own: errBehindPooler.
func ownSession(ctx context.Context, conn *sql.Conn) (uint32, error) {
	var startup uint32
	if err := conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("PostgreSQL connection of type %T, want pgx's", dc)
		}
		startup = sc.Conn().PgConn().PID()
		return nil
	}); err != nil {
		return 0, err
	}
	// One message, one transaction: a prepared statement, prepared on
	// one server connection of a pooler and run on another, would fail.
	var pid int64
	if err := conn.QueryRowContext(ctx, "SELECT pg_backend_pid()", pgx.QueryExecModeSimpleProtocol).Scan(&pid); err != nil {
		return 0, err
	}
	if uint32(pid) != startup {
		return 0, fmt.Errorf("%w: the server process %d answers a connection that started with %d (the store opens as behind a transaction pooler)", errBehindPooler, pid, startup)
	}
	return startup, nil
}

// errLockStranded: the migration lock was taken on a server process the
// session no longer runs on, so it cannot be released from here.
var errLockStranded = errors.New("the schema migration lock cannot be released")

// unlockMigrations releases the migration lock, in the same statement
// that checks the session still runs on the server process pid holding
// it: an unlock on another process would release nothing, and a check
// and an unlock in two statements could run on two behind a pooler.
func unlockMigrations(ctx context.Context, conn *sql.Conn, pid uint32) error {
	var released sql.NullBool
	var on int64
	if err := conn.QueryRowContext(ctx, "SELECT CASE WHEN pg_backend_pid() = $2 THEN pg_advisory_unlock($1) END, pg_backend_pid()",
		pgx.QueryExecModeSimpleProtocol, migrationLock, int64(pid)).Scan(&released, &on); err != nil {
		return fmt.Errorf("%w: %w (it is released when server process %d's connection closes)", errLockStranded, err, pid)
	}
	if uint32(on) != pid {
		return fmt.Errorf("%w: server process %d holds it, but the session now runs on %d: something between mutual and "+
			"PostgreSQL moved the connection; it is released when process %d's connection closes", errLockStranded, pid, on, pid)
	}
	return nil
}

// lockMigrations takes the migration lock for conn's session, on the
// server process pid. It asks
// rather than waits in the server: a statement waiting there holds a
// snapshot, which a CREATE INDEX CONCURRENTLY of the lock's holder would
// wait for in turn (a deadlock PostgreSQL ends by failing one of them).
func lockMigrations(ctx context.Context, conn *sql.Conn, pid uint32) error {
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		// The check and the lock in one statement: on any other server
		// process than the session's, the lock is not asked for at all.
		var got sql.NullBool
		var on int64
		if err := conn.QueryRowContext(ctx, "SELECT CASE WHEN pg_backend_pid() = $2 THEN pg_try_advisory_lock($1) END, pg_backend_pid()",
			pgx.QueryExecModeSimpleProtocol, migrationLock, int64(pid)).Scan(&got, &on); err != nil {
			return err
		}
		if uint32(on) != pid {
			return fmt.Errorf("%w: the migration lock was to be taken by server process %d, but the statement ran on %d "+
				"(not taken; the store opens as behind a transaction pooler)", errBehindPooler, pid, on)
		}
		if got.Bool {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("wait for another replica's schema migration: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// applyOutsideTx runs a no-transaction migration on conn, one statement
// at a time, then checks the indexes it builds (see noTransaction).
func (db *DB) applyOutsideTx(ctx context.Context, conn *sql.Conn, m migration) error {
	if err := dropInvalid(ctx, conn, m, "CONCURRENTLY "); err != nil {
		return err
	}
	for _, st := range m.statements() {
		if _, err := conn.ExecContext(ctx, st); err != nil {
			return fmt.Errorf("migration %s (it is safe to start again): %w", m.name, err)
		}
	}
	for _, ix := range m.indexes() {
		if valid, found, err := indexValid(ctx, conn, ix); err != nil || !valid {
			return fmt.Errorf("migration %s: index %s not built (found %t, err %v): start again to rebuild it", m.name, ix, found, err)
		}
	}
	return noteApplied(ctx, db, conn, m)
}

// indexes are the indexes a no-transaction migration builds.
func (m migration) indexes() []string {
	var out []string
	for _, sub := range concurrentIndex.FindAllStringSubmatch(m.body, -1) {
		if sub[1] != "" {
			out = append(out, sub[2])
		}
	}
	return out
}

// dropInvalid drops the indexes of m that a build which failed part-way
// left invalid, which IF NOT EXISTS would keep so; how is "CONCURRENTLY "
// outside a transaction.
func dropInvalid(ctx context.Context, ex execQueryer, m migration, how string) error {
	for _, ix := range m.indexes() {
		valid, found, err := indexValid(ctx, ex, ix)
		if err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
		if found && !valid {
			if _, err := ex.ExecContext(ctx, "DROP INDEX "+how+"IF EXISTS "+ix); err != nil {
				return fmt.Errorf("migration %s: drop index %s, left invalid by a failed build: %w", m.name, ix, err)
			}
		}
	}
	return nil
}

// indexValid says whether the index named ix exists in the search path,
// and whether it is valid (usable, and kept up to date).
func indexValid(ctx context.Context, ex execQueryer, ix string) (valid, found bool, err error) {
	err = ex.QueryRowContext(ctx, `SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE c.relname = $1 AND pg_table_is_visible(c.oid)`, ix).Scan(&valid)
	if err == sql.ErrNoRows {
		return false, false, nil
	}
	return valid, err == nil, err
}
