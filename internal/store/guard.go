package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Refusals decided inside the issuing transaction.
var (
	// ErrRevoked: what authorized an issuance (the certificate presented,
	// its identity or its node) has been revoked.
	ErrRevoked = errors.New("revoked")
	// ErrNotGranted: the registration entry that granted an identity no
	// longer exists, or no longer grants it.
	ErrNotGranted = errors.New("no longer granted by a registration entry")
)

// IssueCheck is what RecordIssuance verifies inside the issuing
// transaction, ordered against revocations, so that a revocation or an
// entry deletion that has answered success is never overtaken by an
// issuance that was already under way:
//
//   - the certificate's identity, and its node, were not revoked at or
//     after its IssuedAt (the request began before that revocation);
//   - the Presented certificate exists, is not revoked, and neither its
//     identity nor its node (nor itself as a node) was revoked at or after
//     it was issued;
//   - the certificate's EntryID, when set, still names an entry granting
//     its identity.
type IssueCheck struct {
	// Presented is the serial of the certificate that authenticated the
	// request: the one renewed, or the node's for a workload certificate.
	Presented string
	// TokenCreated, for an enrollment, is when its join token was made: a
	// token made at or before a revocation of its identity (or node) no
	// longer enrolls, so that revoking an identity also ends the tokens
	// already handed out for it.
	TokenCreated time.Time
}

// lockAgainstRevocation shares, for the rest of tx, the PostgreSQL advisory
// lock that orders revocations (and entry deletions) against issuances
// across replicas: revocations take it exclusively (lockRevocation), every
// issuing transaction shares it before its checks. On SQLite the single
// writer connection already orders them.
func (db *DB) lockAgainstRevocation(ctx context.Context, tx *sql.Tx) error {
	if db.kind != "postgres" {
		return nil
	}
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock_shared(7105294004)"); err != nil {
		return fmt.Errorf("wait for revocations in progress: %w", err)
	}
	return nil
}

// lockRevocation takes the revocation lock exclusively for the rest of tx (PostgreSQL).
func (db *DB) lockRevocation(ctx context.Context, tx *sql.Tx) error {
	if db.kind != "postgres" {
		return nil
	}
	_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(7105294004)")
	return err
}

// checkIssuanceQuery reads, in one round trip, everything IssueCheck needs.
const checkIssuanceQuery = `SELECT
		(SELECT MAX(revoked_at_us) FROM revoked_identities WHERE spiffe_id = ?),
		(SELECT MAX(revoked_at_us) FROM revoked_nodes WHERE node_id = ? OR node_id = ?),
		p.serial, p.spiffe_id, p.issued_at_us, p.revoked_at_us,
		(SELECT MAX(revoked_at_us) FROM revoked_identities WHERE spiffe_id = p.spiffe_id),
		(SELECT MAX(revoked_at_us) FROM revoked_nodes WHERE node_id = p.spiffe_id OR node_id = p.node_id),
		(SELECT id FROM entries WHERE id = ?),
		(SELECT spiffe_id FROM entries WHERE id = ?)
		FROM (SELECT 1 AS one) o LEFT JOIN certificates p ON p.serial = ?`

// checkIssuanceSQLite is checkIssuanceQuery for SQLite, with the same
// arguments and row: SQLite reads "node_id = ? OR node_id = ?" as an IN
// list, which builds a temporary b-tree on every run (two per check, a
// fifth of its cost); the newest of two single lookups reads the same.
// Times are never negative, so -1 stands for "none" inside MAX (which,
// with several arguments, is NULL if any is).
var checkIssuanceSQLite = `SELECT
		(SELECT MAX(revoked_at_us) FROM revoked_identities WHERE spiffe_id = ?),
		` + newestNodeRevocation + `,
		p.serial, p.spiffe_id, p.issued_at_us, p.revoked_at_us,
		(SELECT MAX(revoked_at_us) FROM revoked_identities WHERE spiffe_id = p.spiffe_id),
		` + strings.ReplaceAll(strings.Replace(newestNodeRevocation, "?", "p.spiffe_id", 1), "?", "p.node_id") + `,
		(SELECT id FROM entries WHERE id = ?),
		(SELECT spiffe_id FROM entries WHERE id = ?)
		FROM (SELECT 1 AS one) o LEFT JOIN certificates p ON p.serial = ?`

// newestNodeRevocation is the newest revocation of either of two nodes
// (SQLite), or NULL.
const newestNodeRevocation = `NULLIF(MAX(IFNULL((SELECT revoked_at_us FROM revoked_nodes WHERE node_id = ?), -1),
			IFNULL((SELECT revoked_at_us FROM revoked_nodes WHERE node_id = ?), -1)), -1)`

// txQueryRow is txExec for a query of one row.
func (db *DB) txQueryRow(ctx context.Context, tx *sql.Tx, query string, args ...any) *sql.Row {
	if st, ok := db.stmts.Load(stmtKey{db.writer, query}); ok {
		return tx.StmtContext(ctx, st.(*sql.Stmt)).QueryRowContext(ctx, args...)
	}
	return tx.QueryRowContext(ctx, query, args...)
}

// checkRow is what checkIssuanceQuery reads.
type checkRow struct {
	idRev, nodeRev    sql.NullInt64
	pSerial, pID      sql.NullString
	pIssued, pRevoked sql.NullInt64
	pIDRev, pNodeRev  sql.NullInt64
	entryID           sql.NullString
	entryFor          sql.NullString
}

// checkArgs are checkIssuanceQuery's arguments for c.
func checkArgs(c *Certificate) []any {
	return []any{c.SPIFFEID, c.SPIFFEID, nullString(c.NodeID), nullString(c.EntryID), nullString(c.EntryID), c.Check.Presented}
}

// dest are the Scan destinations of checkIssuanceQuery's row.
func (r *checkRow) dest() []any {
	return []any{&r.idRev, &r.nodeRev, &r.pSerial, &r.pID, &r.pIssued, &r.pRevoked, &r.pIDRev, &r.pNodeRev, &r.entryID, &r.entryFor}
}

// checkIssuance verifies c.Check inside tx, in one round trip.
func (db *DB) checkIssuance(ctx context.Context, tx *sql.Tx, c *Certificate) error {
	var r checkRow
	if err := db.txQueryRow(ctx, tx, db.q.checkIssuance(), checkArgs(c)...).Scan(r.dest()...); err != nil {
		return fmt.Errorf("check the revocations of %s: %w", c.SPIFFEID, err)
	}
	return r.refusal(c)
}

// refusal is why c.Check refuses c given what the store holds (r), or nil.
func (r *checkRow) refusal(c *Certificate) error {
	idRev, nodeRev := r.idRev, r.nodeRev
	pSerial, pID, pIssued, pRevoked, pIDRev, pNodeRev := r.pSerial, r.pID, r.pIssued, r.pRevoked, r.pIDRev, r.pNodeRev
	entryID, entryFor := r.entryID, r.entryFor
	issued := toUS(c.IssuedAt)
	switch {
	case idRev.Valid && idRev.Int64 >= issued:
		return fmt.Errorf("identity %s was revoked at %s, while this request was under way: %w", c.SPIFFEID, fromUS(idRev.Int64).Format(time.RFC3339Nano), ErrRevoked)
	case nodeRev.Valid && nodeRev.Int64 >= issued:
		node := c.NodeID
		if node == "" {
			node = c.SPIFFEID
		}
		return fmt.Errorf("node %s was revoked at %s, while this request was under way: %w", node, fromUS(nodeRev.Int64).Format(time.RFC3339Nano), ErrRevoked)
	}
	if tc := c.Check.TokenCreated; !tc.IsZero() {
		switch created := toUS(tc); {
		case idRev.Valid && idRev.Int64 >= created:
			return fmt.Errorf("the join token was made before identity %s was revoked at %s: %w", c.SPIFFEID, fromUS(idRev.Int64).Format(time.RFC3339Nano), ErrRevoked)
		case nodeRev.Valid && nodeRev.Int64 >= created:
			return fmt.Errorf("the join token was made before node %s was revoked at %s: %w", c.SPIFFEID, fromUS(nodeRev.Int64).Format(time.RFC3339Nano), ErrRevoked)
		}
	}
	if p := c.Check.Presented; p != "" {
		switch {
		case !pSerial.Valid:
			return fmt.Errorf("certificate %s is not in this CA's records: %w", p, ErrRevoked)
		case pRevoked.Valid:
			return fmt.Errorf("certificate %s was revoked at %s: %w", p, fromUS(pRevoked.Int64).Format(time.RFC3339Nano), ErrRevoked)
		case pIDRev.Valid && pIDRev.Int64 >= pIssued.Int64:
			return fmt.Errorf("certificate %s was issued before its identity %s was revoked at %s: %w", p, pID.String, fromUS(pIDRev.Int64).Format(time.RFC3339Nano), ErrRevoked)
		case pNodeRev.Valid && pNodeRev.Int64 >= pIssued.Int64:
			return fmt.Errorf("certificate %s of %s was issued before its node was revoked at %s: %w", p, pID.String, fromUS(pNodeRev.Int64).Format(time.RFC3339Nano), ErrRevoked)
		}
	}
	if c.EntryID != "" && (!entryID.Valid || entryFor.String != c.SPIFFEID) {
		return fmt.Errorf("entry %s (which granted %s) has been deleted: %w", c.EntryID, c.SPIFFEID, ErrNotGranted)
	}
	return nil
}

// recordRevokedState keeps the revocation of an identity or a node as state
// in table (revoked_identities or revoked_nodes, keyed by key): the newest
// time wins.
func (db *DB) recordRevokedState(ctx context.Context, tx *sql.Tx, table, key, id string, reason int, at time.Time) error {
	_, err := tx.ExecContext(ctx, db.q.rebind(`INSERT INTO `+table+` (`+key+`, revoked_at_us, reason) VALUES (?, ?, ?)
		ON CONFLICT (`+key+`) DO UPDATE SET revoked_at_us = excluded.revoked_at_us, reason = excluded.reason
		WHERE excluded.revoked_at_us > `+table+`.revoked_at_us`), id, toUS(at), reason)
	if err != nil {
		return fmt.Errorf("record the revocation of %s: %w", id, err)
	}
	return nil
}
