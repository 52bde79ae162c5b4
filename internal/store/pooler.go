package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// Behind a connection pooler (PgBouncer) in transaction mode, each
// transaction may run on a different server connection, and the pooler
// refuses run-time parameters in the startup packet ("unsupported startup
// parameter"), or ignores them (ignore_startup_parameters: then the
// migrations find the server process answering is not the one named at
// startup, see ownSession). So the store, when the server refuses them or
// a pooler is found:
//   - sets pgSessionDefaults with SET LOCAL at the start of every write
//     transaction (begin), so a frozen peer still costs a bounded stall;
//   - prepares nothing on the server: named prepared statements live on
//     one server connection, which the next transaction may not get
//     (default_query_exec_mode=cache_describe unless the URL sets a mode,
//     and no prepareHot);
//   - takes only transaction-scoped advisory locks (as it always does).

// errBehindPooler: a pooler answers for the server, though it took the
// startup parameters (PgBouncer with ignore_startup_parameters): the store
// opens again as behind a pooler.
var errBehindPooler = errors.New("a connection pooler is between mutual and PostgreSQL")

// isPoolerRefusal reports whether err is a pooler refusing the session
// defaults in the startup packet.
func isPoolerRefusal(err error) bool {
	return err != nil && strings.Contains(err.Error(), "unsupported startup parameter")
}

// poolerMisconfigured turns errors a pooler gives when its mode cannot
// carry the store's transactions into a configuration error.
func poolerMisconfigured(err error) error {
	if err == nil {
		return nil
	}
	if s := err.Error(); strings.Contains(s, "statement pool mode") || strings.Contains(s, "transaction blocks not allowed") {
		return fmt.Errorf("configuration: the connection pooler runs in statement mode, which cannot carry the store's transactions: "+
			"set pool_mode = transaction (or session) for this database in pgbouncer.ini: %w", err)
	}
	return err
}

// pooledDSN is rawURL for a store behind a pooler: no startup parameters
// of its own, and no server-side prepared statements.
func pooledDSN(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	q := u.Query()
	if !q.Has("default_query_exec_mode") {
		q.Set("default_query_exec_mode", "cache_describe")
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// pooledTxDefaults sets pgSessionDefaults for one transaction.
var pooledTxDefaults = func() string {
	keys := make([]string, 0, len(pgSessionDefaults))
	for k := range pgSessionDefaults {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "SET LOCAL %s = %s; ", k, pgSessionDefaults[k])
	}
	return b.String()
}()

// begin starts a write transaction; behind a pooler it first applies the
// session defaults to it.
func (db *DB) begin(ctx context.Context) (*sql.Tx, error) {
	tx, err := db.writer.BeginTx(ctx, nil)
	if err != nil || !db.pooled {
		return tx, poolerMisconfigured(err)
	}
	if _, err := tx.ExecContext(ctx, pooledTxDefaults); err != nil {
		tx.Rollback()
		return nil, poolerMisconfigured(err)
	}
	return tx, nil
}

// queryRowPrepared runs query on pool with a statement prepared once, or
// behind a pooler (where a prepared statement would live on a server
// connection the next query may not get) as a plain query.
func (db *DB) queryRowPrepared(ctx context.Context, pool *sql.DB, query string, args ...any) (*sql.Row, error) {
	if db.pooled {
		return pool.QueryRowContext(ctx, query, args...), nil
	}
	st, err := db.prepared(ctx, pool, query)
	if err != nil {
		return nil, err
	}
	return st.QueryRowContext(ctx, args...), nil
}
