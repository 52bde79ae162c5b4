// Package store keeps the CA's state: join tokens, issued certificates and
// their revocations, in an embedded SQLite file or a shared PostgreSQL.
//
// # Contract
//
//   - Every method is safe for concurrent use, by many goroutines and (on
//     PostgreSQL) by many CA replicas at once.
//   - Every method honours its context: cancelled work returns ctx.Err()
//     wrapped, and leaves nothing written.
//   - Writes that belong together happen in one transaction: RecordIssuance
//     consumes the token and stores the certificate, or does neither.
//   - Domain outcomes are the sentinel errors below (test them with
//     errors.Is); any other error means the store itself failed (down,
//     unreachable, disk full) and the caller may retry later.
//   - Times are stored with microsecond precision, in UTC.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib" // also registers the "pgx" database/sql driver
	_ "modernc.org/sqlite"           // registers the "sqlite" database/sql driver
)

// Domain errors.
var (
	ErrNotFound      = errors.New("not found")
	ErrTokenUsed     = errors.New("join token already used")
	ErrTokenExpired  = errors.New("join token expired")
	ErrAlreadyExists = errors.New("already exists")
)

// Token is a stored join token.
type Token struct {
	ID          string
	SecretHash  []byte
	SPIFFEID    string
	DNSNames    []string
	IPAddresses []string
	CertTTL     time.Duration
	CreatedAt   time.Time
	ExpiresAt   time.Time
	CreatedBy   string
	Roles       []string
	// UsedAt is zero while the token is unused.
	UsedAt     time.Time
	UsedSerial string
}

// Certificate is a stored issued certificate.
type Certificate struct {
	// Serial is the lower-case hex serial number.
	Serial    string
	SPIFFEID  string
	NotBefore time.Time
	NotAfter  time.Time
	IssuedAt  time.Time
	DER       []byte
	// RequestedBy says who asked: "token:ID", "renew:SERIAL" or
	// "entry:ID" (a workload certificate obtained by a node).
	RequestedBy string
	// NodeID is the node a workload certificate was obtained through, if any.
	NodeID string
	// RenewedFrom is the serial of the certificate this one renewed, or "".
	// Revoking a serial also revokes every unexpired certificate renewed
	// from it, directly or through other renewals.
	RenewedFrom string
	// EntryID is the registration entry that granted a workload
	// certificate, kept through its renewals, or "".
	EntryID string
	// Check, when set, is verified by RecordIssuance inside the issuing
	// transaction (not stored).
	Check *IssueCheck
	// LogEntry, when set, is appended to the issuance log in the same
	// transaction; LogIndex is then its index (set by RecordIssuance).
	LogEntry []byte
	LogIndex int64
	// RevokedAt is zero while the certificate is not revoked.
	RevokedAt        time.Time
	RevocationReason int
}

// Revoked reports whether the certificate has been revoked.
func (c *Certificate) Revoked() bool { return !c.RevokedAt.IsZero() }

// CertificateFilter selects certificates for ListCertificates.
type CertificateFilter struct {
	// SPIFFEID, when set, selects one identity.
	SPIFFEID string
	// ValidAt, when set, selects certificates unexpired at that time.
	ValidAt time.Time
	// ExpiresBefore, when set, selects certificates that expire before
	// that time (with ValidAt: those expiring soon).
	ExpiresBefore time.Time
	// Revoked selects by revocation; the zero value takes both.
	Revoked RevokedFilter
	// Limit caps the number of rows; zero means 1000.
	Limit int
	// After, when set, continues a listing after the certificate it names
	// (a cursor from Certificate.Cursor): older ones only.
	After Cursor
}

// RevokedFilter selects certificates by whether they were revoked.
type RevokedFilter int

const (
	// RevokedOrNot takes every certificate.
	RevokedOrNot RevokedFilter = iota
	// OnlyRevoked takes revoked certificates only.
	OnlyRevoked
	// NotRevoked takes certificates that were never revoked.
	NotRevoked
)

// Cursor is a position in the newest-first order of ListCertificates.
type Cursor struct {
	IssuedAt time.Time
	Serial   string
}

// Cursor returns the position just after c in ListCertificates' order.
func (c *Certificate) Cursor() Cursor { return Cursor{IssuedAt: c.IssuedAt, Serial: c.Serial} }

// String encodes the cursor for an API query: "MICROSECONDS.SERIAL".
func (c Cursor) String() string {
	if c.Serial == "" {
		return ""
	}
	return strconv.FormatInt(toUS(c.IssuedAt), 10) + "." + c.Serial
}

// ParseCursor reads a cursor made by Cursor.String.
func ParseCursor(s string) (Cursor, error) {
	us, serial, ok := strings.Cut(s, ".")
	n, err := strconv.ParseInt(us, 10, 64)
	if !ok || err != nil || serial == "" {
		return Cursor{}, fmt.Errorf("cursor %q: want the \"next\" value of the previous page", s)
	}
	return Cursor{IssuedAt: fromUS(n), Serial: serial}, nil
}

// DB is a store on SQLite or PostgreSQL.
type DB struct {
	kind   string // "sqlite" or "postgres"
	writer *sql.DB
	reader *sql.DB
	q      queries
	group  groupCommit
	stmts  sync.Map // stmtKey → *sql.Stmt, prepared once per pool
	name   string   // the store as the operator named it, password hidden
	pooled bool     // PostgreSQL through a pooler (see pooler.go)
	file   *fileIdentity
	health health
	edge   atomic.Pointer[logEdge] // SQLite: the log's right edge as last committed

	// tokenReads coalesces concurrent token reads (PostgreSQL).
	tokenReads tokenReads
}

//go:embed migrations
var migrations embed.FS

// Open connects to the store named by rawURL and brings its schema up to
// date: "sqlite:PATH" (or a bare path) for the embedded store, or
// "postgres://..." / "postgresql://...". A missing SQLite file is created.
func Open(ctx context.Context, rawURL string) (*DB, error) {
	return OpenWith(ctx, rawURL, Options{})
}

// OpenWith is Open with options.
func OpenWith(ctx context.Context, rawURL string, o Options) (*DB, error) {
	switch {
	case strings.HasPrefix(rawURL, "postgres://"), strings.HasPrefix(rawURL, "postgresql://"):
		return openPostgres(ctx, rawURL)
	case strings.HasPrefix(rawURL, "sqlite:"):
		return openSQLite(ctx, strings.TrimPrefix(strings.TrimPrefix(rawURL, "sqlite:"), "//"), o)
	case strings.Contains(rawURL, "://"):
		return nil, fmt.Errorf("store %q: unsupported scheme; use sqlite:PATH or postgres://USER@HOST/DB", redact(rawURL))
	case rawURL == "":
		return nil, errors.New("no store given: use sqlite:PATH or postgres://USER@HOST/DB")
	default:
		return openSQLite(ctx, rawURL, o)
	}
}

func openSQLite(ctx context.Context, path string, o Options) (*DB, error) {
	if path == "" {
		return nil, errors.New("store sqlite: no file path given (sqlite:/var/lib/mutual/mutual.db)")
	}
	if dir := filepath.Dir(path); dir != "" {
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("store sqlite:%s: %w", path, err)
		}
	}
	if o.MustExist {
		st, err := os.Stat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("store sqlite:%s does not exist, but this CA has issued certificates before: "+
				"restore the file from backup (a fresh store would lose every certificate, token and revocation and fork the issuance log): %w", path, ErrDamaged)
		case err != nil:
			return nil, fmt.Errorf("store sqlite:%s: %w", path, err)
		case st.Size() == 0:
			return nil, fmt.Errorf("store sqlite:%s is empty, but this CA has issued certificates before: "+
				"restore the file from backup (a fresh store would lose every certificate, token and revocation and fork the issuance log): %w", path, ErrDamaged)
		}
	}
	// A fresh file is created 0600: it holds token hashes and every certificate.
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600); err == nil {
		f.Close()
	} else {
		return nil, fmt.Errorf("store sqlite:%s: %w", path, err)
	}
	fi, err := statIdentity(path)
	if err != nil {
		return nil, fmt.Errorf("store sqlite:%s: %w", path, err)
	}
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)&_txlock=immediate"
	w, err := sql.Open("sqlite", dsn)
	if err != nil {
		fi.f.Close()
		return nil, fmt.Errorf("store sqlite:%s: %w", path, err)
	}
	// One writer connection: SQLite takes one writer at a time anyway, and
	// queueing in Go is far cheaper than SQLite's busy-wait.
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	r, err := sql.Open("sqlite", dsn+"&mode=ro")
	if err != nil {
		w.Close()
		fi.f.Close()
		return nil, fmt.Errorf("store sqlite:%s: %w", path, err)
	}
	r.SetMaxOpenConns(8)
	// Kept open: a SQLite connection is costly to open, and its prepared
	// statements go with it.
	r.SetMaxIdleConns(8)
	db := &DB{kind: "sqlite", writer: w, reader: r, q: newQueries(false), name: "sqlite:" + path, file: fi}
	damaged := func(err error) error {
		if isCorruption(err) || errors.Is(err, ErrDamaged) {
			return fmt.Errorf("store sqlite:%s is damaged (%v): the CA will not start on it: restore the file from backup, then start the CA again: %w",
				path, err, ErrDamaged)
		}
		return fmt.Errorf("store sqlite:%s: %w", path, err)
	}
	if err := checkIntegrity(ctx, w); err != nil {
		db.closeConns()
		return nil, damaged(err)
	}
	if err := db.migrate(ctx); err != nil {
		db.closeConns()
		return nil, damaged(err)
	}
	db.prepareHot(ctx)
	return db, nil
}

func openPostgres(ctx context.Context, rawURL string) (*DB, error) {
	db, err := openPostgresPool(ctx, rawURL, false)
	if isPoolerRefusal(err) || errors.Is(err, errBehindPooler) {
		db, err = openPostgresPool(ctx, rawURL, true)
	}
	return db, err
}

// openPostgresPool opens the store directly, or through a pooler when
// pooled (see pooler.go).
func openPostgresPool(ctx context.Context, rawURL string, pooled bool) (*DB, error) {
	dsn, err := withSessionDefaults(rawURL)
	if pooled {
		dsn, err = pooledDSN(rawURL)
	}
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", redact(rawURL), err)
	}
	p, err := openPgx(dsn)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", redact(rawURL), err)
	}
	p.SetMaxOpenConns(16)
	p.SetMaxIdleConns(16)
	p.SetConnMaxLifetime(30 * time.Minute)
	db := &DB{kind: "postgres", writer: p, reader: p, q: newQueries(true), name: redact(rawURL), pooled: pooled}
	if err := db.migrate(ctx); err != nil {
		p.Close()
		return nil, fmt.Errorf("store %s: %w", redact(rawURL), err)
	}
	if !pooled {
		db.prepareHot(ctx)
	}
	return db, nil
}

// pgTracer, when set (by tests, before Open), sees every statement the
// PostgreSQL stores opened afterwards send: how round trips are counted.
var pgTracer pgx.QueryTracer

// openPgx opens a pool on dsn, traced by pgTracer if set.
func openPgx(dsn string) (*sql.DB, error) {
	if pgTracer == nil {
		return sql.Open("pgx", dsn)
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.Tracer = pgTracer
	return stdlib.OpenDB(*cfg), nil
}

// withSessionDefaults adds pgSessionDefaults to a PostgreSQL URL as
// run-time parameters, keeping any the operator set.
func withSessionDefaults(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	q := u.Query()
	for k, v := range pgSessionDefaults {
		if !q.Has(k) {
			q.Set(k, v)
		}
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// redact hides a password in a database URL.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// Kind returns "sqlite" or "postgres".
func (db *DB) Kind() string { return db.kind }

// closeConns closes the pools without folding the WAL back.
func (db *DB) closeConns() {
	db.reader.Close()
	db.writer.Close()
	if db.file != nil {
		db.file.f.Close()
	}
}

// Close releases the store's connections.
func (db *DB) Close() error {
	if db.file != nil {
		defer db.file.f.Close()
	}
	db.stmts.Range(func(_, v any) bool { v.(*sql.Stmt).Close(); return true })
	if db.reader == db.writer {
		return db.writer.Close()
	}
	// Readers first, then fold the WAL into the database file, so that a
	// stopped CA's state is all in mutual.db (what an operator backs up).
	err := db.reader.Close()
	if _, e := db.writer.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); e != nil && err == nil {
		err = fmt.Errorf("checkpoint: %w", e)
	}
	if e := db.writer.Close(); err == nil {
		err = e
	}
	return err
}

// Ping checks that the store answers a read and is not known damaged;
// Health checks that it can write.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.Damaged(); err != nil {
		return err
	}
	var one int
	if err := db.reader.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("store %s unavailable: %w", db.kind, db.noteError(err))
	}
	return nil
}

func toUS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromUS(us int64) time.Time { return time.UnixMicro(us).UTC() }

func nullUS(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return fromUS(n.Int64)
}

// stmtKey names a prepared statement: the same query is prepared once per pool.
type stmtKey struct {
	pool  *sql.DB
	query string
}

// prepared returns a statement for query on pool, prepared once: the hot
// issuance path would otherwise parse its SQL on every call.
func (db *DB) prepared(ctx context.Context, pool *sql.DB, query string) (*sql.Stmt, error) {
	key := stmtKey{pool, query}
	if st, ok := db.stmts.Load(key); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := pool.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if prev, loaded := db.stmts.LoadOrStore(key, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

// txExec runs query inside tx, with the statement prepared at Open when it
// is one of the hot ones (preparing later would need a second connection,
// and SQLite's writer pool has one).
func (db *DB) txExec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	if st, ok := db.stmts.Load(stmtKey{db.writer, query}); ok {
		return tx.StmtContext(ctx, st.(*sql.Stmt)).ExecContext(ctx, args...)
	}
	return tx.ExecContext(ctx, query, args...)
}

// hotWrites are prepared once at Open.
func (db *DB) hotWrites() []string {
	qs := []string{
		db.q.rebind(insertCertificateOnce),
		db.q.checkIssuance(),
		db.q.rebind(consumeToken),
		db.q.rebind(unconsumeToken),
	}
	if db.kind == "postgres" {
		return append(qs, appendLogBatch, syncLogQuery)
	}
	qs = append(qs, insertCertificateAtOnce, logSizeQuery, dataVersionQuery, writerMarkQuery, updateLogSize)
	qs = append(qs, insertLogEntries[1:]...)
	return append(qs, insertLogHashes[1:]...)
}

// prepareHot prepares the hot statements; a failure only costs speed.
func (db *DB) prepareHot(ctx context.Context) {
	if db.kind == "sqlite" {
		// The writer mark's table, empty (the first batch marks the
		// connection), so that its query can be prepared.
		db.writer.ExecContext(ctx, createWriterMark)
	}
	for _, q := range db.hotWrites() {
		db.prepared(ctx, db.writer, q)
	}
}
