package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

type queries struct{ postgres bool }

func newQueries(postgres bool) queries { return queries{postgres: postgres} }

// checkIssuance is checkIssuanceQuery in the store's dialect.
func (q queries) checkIssuance() string {
	if !q.postgres {
		return checkIssuanceSQLite
	}
	return q.rebind(checkIssuanceQuery)
}

// rebind turns "?" placeholders into PostgreSQL's "$n".
func (q queries) rebind(s string) string {
	if !q.postgres {
		return s
	}
	var b strings.Builder
	n := 0
	for _, c := range s {
		if c == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

func jsonList(v []string) string {
	if v == nil {
		v = []string{}
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func parseList(s string) []string {
	var v []string
	json.Unmarshal([]byte(s), &v)
	return v
}

const tokenColumns = "id, secret_hash, spiffe_id, dns_names, ip_addresses, cert_ttl_us, created_at_us, expires_at_us, created_by, used_at_us, used_serial, roles"

type scanner interface{ Scan(...any) error }

func scanToken(s scanner) (Token, error) {
	var t Token
	var dns, ips, roles string
	var ttl, created, expires int64
	var used sql.NullInt64
	var usedSerial sql.NullString
	if err := s.Scan(&t.ID, &t.SecretHash, &t.SPIFFEID, &dns, &ips, &ttl, &created, &expires, &t.CreatedBy, &used, &usedSerial, &roles); err != nil {
		return t, err
	}
	t.DNSNames, t.IPAddresses, t.Roles = parseList(dns), parseList(ips), parseList(roles)
	t.CertTTL = time.Duration(ttl) * time.Microsecond
	t.CreatedAt, t.ExpiresAt, t.UsedAt = fromUS(created), fromUS(expires), nullUS(used)
	t.UsedSerial = usedSerial.String
	return t, nil
}

// CreateToken stores a new join token.
func (db *DB) CreateToken(ctx context.Context, t Token) error {
	_, err := db.writer.ExecContext(ctx, db.q.rebind(`INSERT INTO tokens (`+tokenColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?)`),
		t.ID, t.SecretHash, t.SPIFFEID, jsonList(t.DNSNames), jsonList(t.IPAddresses),
		t.CertTTL.Microseconds(), toUS(t.CreatedAt), toUS(t.ExpiresAt), t.CreatedBy, jsonList(t.Roles))
	if err != nil {
		if isUniqueViolation(err) {
			return fmt.Errorf("token %s: %w", t.ID, ErrAlreadyExists)
		}
		return fmt.Errorf("store token %s: %w", t.ID, err)
	}
	return nil
}

// GetToken returns the token with id, or ErrNotFound.
func (db *DB) GetToken(ctx context.Context, id string) (Token, error) {
	if db.kind == "postgres" {
		return db.tokenReads.get(ctx, db, id)
	}
	row, err := db.queryRowPrepared(ctx, db.reader, db.q.rebind("SELECT "+tokenColumns+" FROM tokens WHERE id = ?"), id)
	if err != nil {
		return Token{}, fmt.Errorf("read token %s: %w", id, err)
	}
	t, err := scanToken(row)
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("token %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return t, fmt.Errorf("read token %s: %w", id, err)
	}
	return t, nil
}

// ListTokens returns the newest tokens first, up to limit (0 means 1000).
func (db *DB) ListTokens(ctx context.Context, limit int) ([]Token, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := db.reader.QueryContext(ctx, db.q.rebind("SELECT "+tokenColumns+" FROM tokens ORDER BY created_at_us DESC LIMIT ?"), limit)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	var out []Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// VoidToken makes the unused token id expire at now, so that no
// enrollment can use it from then on; the record stays (who made it, for
// which identity). It returns ErrNotFound for an unknown token,
// ErrTokenUsed for one already used and ErrTokenExpired for one already
// expired: nothing to void.
func (db *DB) VoidToken(ctx context.Context, id string, now time.Time) error {
	res, err := db.writer.ExecContext(ctx, db.q.rebind(`UPDATE tokens SET expires_at_us = ?
		WHERE id = ? AND used_at_us IS NULL AND expires_at_us > ?`), toUS(now), id, toUS(now))
	if err != nil {
		return fmt.Errorf("void token %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("void token %s: %w", id, err)
	} else if n == 1 {
		return nil
	}
	t, err := db.GetToken(ctx, id)
	switch {
	case err != nil:
		return err
	case !t.UsedAt.IsZero():
		return fmt.Errorf("token %s: %w", id, ErrTokenUsed)
	}
	return fmt.Errorf("token %s: %w", id, ErrTokenExpired)
}

const certColumns = "serial, spiffe_id, not_before_us, not_after_us, issued_at_us, der, requested_by, revoked_at_us, revocation_reason, node_id, renewed_from, entry_id"

// insertCertificateAt stores a new certificate (not revoked) with the log
// index its last argument gives.
const insertCertificateAt = `INSERT INTO certificates (` + certColumns + `, log_index)
		VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?, ?, ?, ?)`

// insertCertificate stores a new certificate (not revoked, log index to come).
const insertCertificate = `INSERT INTO certificates (` + certColumns + `, log_index)
		VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?, ?, ?, NULL)`

// insertCertificateOnce is insertCertificate that changes no row, rather
// than failing, when the serial exists: a refusal that does not spoil the
// batch's transaction.
const insertCertificateOnce = insertCertificate + onConflictSerial

// insertCertificateAtOnce is insertCertificateOnce with the log index
// (SQLite, where the batch knows it: see openLog).
const insertCertificateAtOnce = insertCertificateAt + onConflictSerial

const onConflictSerial = " ON CONFLICT (serial) DO NOTHING"

// certSelect also reads the log index.
const certSelect = certColumns + ", log_index"

func scanCert(s scanner) (Certificate, error) {
	var c Certificate
	var nb, na, ia int64
	var rev, reason, logIndex sql.NullInt64
	var node, parent, entry sql.NullString
	if err := s.Scan(&c.Serial, &c.SPIFFEID, &nb, &na, &ia, &c.DER, &c.RequestedBy, &rev, &reason, &node, &parent, &entry, &logIndex); err != nil {
		return c, err
	}
	c.NodeID, c.RenewedFrom, c.EntryID, c.LogIndex = node.String, parent.String, entry.String, logIndex.Int64
	c.NotBefore, c.NotAfter, c.IssuedAt, c.RevokedAt = fromUS(nb), fromUS(na), fromUS(ia), nullUS(rev)
	c.RevocationReason = int(reason.Int64)
	return c, nil
}

// RecordIssuance stores an issued certificate. When tokenID is not empty the
// token is consumed in the same transaction: it must exist, be unused and
// unexpired at now, or nothing is written and ErrNotFound, ErrTokenUsed or
// ErrTokenExpired is returned.
//
// Concurrent calls are committed together (group commit): one transaction,
// one fsync and (on PostgreSQL) one hold of the log's lock for a batch; a
// refusal of one leaves the others' writes as they are, and a failure of
// the store fails them all. The answer still comes only after the commit.
func (db *DB) RecordIssuance(ctx context.Context, c *Certificate, tokenID string, now time.Time) error {
	return db.group.submit(ctx, db, &issueOp{ctx: ctx, cert: c, tokenID: tokenID, now: now})
}

// consumeToken marks a join token used, if it is still usable.
const consumeToken = `UPDATE tokens SET used_at_us = ?, used_serial = ?
			WHERE id = ? AND used_at_us IS NULL AND expires_at_us > ?`

// selectToken reads one token.
const selectToken = "SELECT " + tokenColumns + " FROM tokens WHERE id = ?"

// tokenRefusal says why token id (t, as read after consumeToken changed
// no row, or err) could not be consumed.
func tokenRefusal(id string, t Token, err error) error {
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("token %s: %w", id, ErrNotFound)
	case err != nil:
		return fmt.Errorf("consume token %s: %w", id, err)
	case !t.UsedAt.IsZero():
		return fmt.Errorf("token %s: %w at %s", id, ErrTokenUsed, t.UsedAt.Format(time.RFC3339))
	default:
		return fmt.Errorf("token %s: %w at %s", id, ErrTokenExpired, t.ExpiresAt.Format(time.RFC3339))
	}
}

// Undoing the writes of an issuance refused after them, in its transaction.
const (
	unconsumeToken    = "UPDATE tokens SET used_at_us = NULL, used_serial = NULL WHERE id = ? AND used_serial = ?"
	deleteCertificate = "DELETE FROM certificates WHERE serial = ?"
)

// recordIn does RecordIssuance's writes inside tx. A refusal (refused)
// leaves tx as it found it, without a savepoint: it changed nothing or
// undid what it changed. A failure (err) of the store spoils tx.
func (db *DB) recordIn(ctx context.Context, tx *sql.Tx, lb *logBatch, c *Certificate, tokenID string, now time.Time) (refused, err error) {
	if tokenID != "" {
		res, err := db.txExec(ctx, tx, db.q.rebind(consumeToken), toUS(now), c.Serial, tokenID, toUS(now))
		if err != nil {
			return nil, fmt.Errorf("consume token %s: %w", tokenID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return nil, fmt.Errorf("consume token %s: %w", tokenID, err)
		} else if n != 1 {
			t, err := scanToken(tx.QueryRowContext(ctx, db.q.rebind(selectToken), tokenID))
			return tokenRefusal(tokenID, t, err), nil
		}
	}
	undo := func(refused error) (error, error) {
		if tokenID != "" {
			if _, err := db.txExec(ctx, tx, db.q.rebind(unconsumeToken), tokenID, c.Serial); err != nil {
				return nil, fmt.Errorf("give token %s back after a refusal: %w", tokenID, err)
			}
		}
		return refused, nil
	}
	if c.Check != nil {
		var r checkRow
		if err := db.txQueryRow(ctx, tx, db.q.checkIssuance(), checkArgs(c)...).Scan(r.dest()...); err != nil {
			return nil, fmt.Errorf("check the revocations of %s: %w", c.SPIFFEID, err)
		}
		if refused := r.refusal(c); refused != nil {
			return undo(refused)
		}
	}
	insert, args := db.q.rebind(insertCertificateOnce), []any{c.Serial, c.SPIFFEID, toUS(c.NotBefore), toUS(c.NotAfter), toUS(c.IssuedAt),
		c.DER, c.RequestedBy, nullString(c.NodeID), nullString(c.RenewedFrom), nullString(c.EntryID)}
	if db.kind == "sqlite" {
		// The log index is known (openLog), saving an update later.
		var at sql.NullInt64
		if c.LogEntry != nil {
			at = sql.NullInt64{Int64: lb.next(), Valid: true}
		}
		insert, args = insertCertificateAtOnce, append(args, at)
	}
	res, err := db.txExec(ctx, tx, insert, args...)
	if err != nil {
		return nil, fmt.Errorf("record certificate %s: %w", c.Serial, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return nil, fmt.Errorf("record certificate %s: %w", c.Serial, err)
	} else if n != 1 {
		return undo(fmt.Errorf("certificate %s: %w", c.Serial, ErrAlreadyExists))
	}
	// The batch appends the entry to the log when it ends (appendQueued).
	if c.LogEntry != nil {
		lb.queue(c)
	}
	return nil, nil
}

// GetCertificate returns the certificate with the hex serial, or ErrNotFound.
func (db *DB) GetCertificate(ctx context.Context, serial string) (Certificate, error) {
	row, err := db.queryRowPrepared(ctx, db.reader, db.q.rebind("SELECT "+certSelect+" FROM certificates WHERE serial = ?"), serial)
	if err != nil {
		return Certificate{}, fmt.Errorf("read certificate %s: %w", serial, err)
	}
	c, err := scanCert(row)
	if errors.Is(err, sql.ErrNoRows) {
		return c, fmt.Errorf("certificate %s: %w", serial, ErrNotFound)
	}
	if err != nil {
		return c, fmt.Errorf("read certificate %s: %w", serial, err)
	}
	return c, nil
}

// ListCertificates returns certificates matching f, newest first.
func (db *DB) ListCertificates(ctx context.Context, f CertificateFilter) ([]Certificate, error) {
	query, args := db.listCertificatesQuery(f)
	rows, err := db.reader.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list certificates: %w", err)
	}
	defer rows.Close()
	var out []Certificate
	for rows.Next() {
		c, err := scanCert(rows)
		if err != nil {
			return nil, fmt.Errorf("list certificates: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// listCertificatesQuery is ListCertificates' query for f, and its arguments.
func (db *DB) listCertificatesQuery(f CertificateFilter) (string, []any) {
	if f.Limit <= 0 {
		f.Limit = 1000
	}
	if q, args, ok := db.listByExpiryDay(f); ok {
		return q, args
	}
	return db.listByIssueOrder(f)
}

// listByIssueOrder reads f's certificates along the list order's index
// (or the identity's), newest first: any filter, but a window of expiry
// (the expiring page) may walk far past rows that expire later.
func (db *DB) listByIssueOrder(f CertificateFilter) (string, []any) {
	where, args := []string{"1=1"}, []any{}
	if f.SPIFFEID != "" {
		where = append(where, "spiffe_id = ?")
		args = append(args, f.SPIFFEID)
	}
	if !f.ValidAt.IsZero() {
		where = append(where, "not_after_us > ?")
		args = append(args, toUS(f.ValidAt))
	}
	if !f.ExpiresBefore.IsZero() {
		where = append(where, "not_after_us < ?")
		args = append(args, toUS(f.ExpiresBefore))
	}
	switch f.Revoked {
	case OnlyRevoked:
		// Answered by the partial index certificates_revoked_by_issue_order.
		where = append(where, "revoked_at_us IS NOT NULL")
	case NotRevoked:
		// The unary plus keeps the planners off certificates_revoked,
		// whose NULL range is nearly every row and then wants a sort of
		// them all: the list order's index finds live certificates, the
		// newest, first.
		where = append(where, "+revoked_at_us IS NULL")
	}
	if f.After.Serial != "" {
		// A row value, so that SQLite and PostgreSQL start the index
		// range at the cursor; "issued_at_us < ? OR (...)" made SQLite
		// walk the index from the newest row to the cursor on every page.
		where = append(where, "(issued_at_us, serial) < (?, ?)")
		args = append(args, toUS(f.After.IssuedAt), f.After.Serial)
	}
	args = append(args, f.Limit)
	return db.q.rebind("SELECT " + certSelect + " FROM certificates WHERE " +
		strings.Join(where, " AND ") + " ORDER BY issued_at_us DESC, serial DESC LIMIT ?"), args
}

// usPerDay is the width of a day of expiry in certificates_live_by_expiry_day
// (migration 0015): not_after_us / usPerDay, divided as SQLite, PostgreSQL
// and Go all divide integers (towards zero), so every side agrees on a
// row's day.
const usPerDay = 86_400_000_000

// maxExpiryDays caps the days listByExpiryDay reads, one subquery each: a
// window of up to 31 days, however it falls across midnight. Longer
// windows hold most live certificates, and the list order's index finds
// them soon enough.
const maxExpiryDays = 32

// listByExpiryDay is the expiring page's query (live certificates, of any
// identity, unexpired at f.ValidAt and expiring before f.ExpiresBefore)
// when the window spans at most maxExpiryDays days; ok is false for any
// other filter. It takes the newest f.Limit live rows of each day of
// expiry in the window from certificates_live_by_expiry_day, in which each
// day's rows are in list order, keeps the newest f.Limit of those, and
// reads their certificates: the rows and order of listByIssueOrder's
// query, without walking past every live certificate that expires later.
func (db *DB) listByExpiryDay(f CertificateFilter) (q string, args []any, ok bool) {
	if f.ValidAt.IsZero() || f.ExpiresBefore.IsZero() || f.Revoked != NotRevoked || f.SPIFFEID != "" {
		return "", nil, false
	}
	// not_after_us runs over [lo+1, hi-1]; an empty window reads one day
	// and finds nothing.
	lo, hi := toUS(f.ValidAt), toUS(f.ExpiresBefore)
	first, last := (lo+1)/usPerDay, max((hi-1)/usPerDay, (lo+1)/usPerDay)
	if last-first >= maxExpiryDays {
		return "", nil, false
	}
	arms := make([]string, 0, last-first+1)
	for day := first; day <= last; day++ {
		arm := "SELECT serial, issued_at_us FROM certificates WHERE " + expiryDayWhere
		args = append(args, day, lo, hi)
		if f.After.Serial != "" {
			arm += " AND (issued_at_us, serial) < (?, ?)"
			args = append(args, toUS(f.After.IssuedAt), f.After.Serial)
		}
		arms = append(arms, fmt.Sprintf("SELECT * FROM (%s ORDER BY issued_at_us DESC, serial DESC LIMIT ?) AS day%d", arm, day-first))
		args = append(args, f.Limit)
	}
	args = append(args, f.Limit)
	return db.q.rebind("SELECT " + certSelect + " FROM certificates WHERE serial IN (SELECT serial FROM (" +
		strings.Join(arms, " UNION ALL ") + ") AS live ORDER BY issued_at_us DESC, serial DESC LIMIT ?)" +
		" ORDER BY issued_at_us DESC, serial DESC"), args, true
}

// expiryDayWhere selects the live certificates of one day of expiry (day,
// then the window's ends) in certificates_live_by_expiry_day: the day's
// expression and the index's condition as the migration spells them, so
// that both planners take the index.
const expiryDayWhere = "not_after_us / 86400000000 = ? AND revoked_at_us IS NULL AND not_after_us > ? AND not_after_us < ?"

// Revocation is one certificate a revocation touched.
type Revocation struct {
	Serial   string
	SPIFFEID string
	// AlreadyRevoked is true when the certificate had been revoked before;
	// its original time and reason are kept.
	AlreadyRevoked bool
}

// RevocationEvent is one entry of the revocation log, in commit order.
type RevocationEvent struct {
	Seq       int64
	Serial    string
	SPIFFEID  string
	NodeID    string
	Reason    int
	RevokedAt time.Time
	NotAfter  time.Time
}

// revokeWhere revokes, in one transaction, the unexpired certificates
// selected by cond (a SQL condition with "?" arguments), recording an event
// for each one newly revoked; then state, when set, records more in the
// same transaction.
//
// On PostgreSQL the transaction holds the revocation lock exclusively: one
// revocation at a time across replicas (event order is commit order), and
// no issuance between its list of certificates and its commit (issuing
// transactions share the lock, see IssueCheck). On SQLite the one writer
// connection gives the same order.
func (db *DB) revokeWhere(ctx context.Context, what, cond string, args []any, reason int, at time.Time, includeExpired bool, state func(*sql.Tx) error) ([]Revocation, error) {
	tx, err := db.begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("revoke %s: %w", what, err)
	}
	defer tx.Rollback()
	if err := db.lockRevocation(ctx, tx); err != nil {
		return nil, fmt.Errorf("revoke %s: %w", what, err)
	}
	qargs := append([]any{}, args...)
	if !includeExpired {
		qargs = append(qargs, toUS(at))
	}
	rows, err := tx.QueryContext(ctx, db.q.rebind(revokeCandidates(cond, includeExpired)), qargs...)
	if err != nil {
		return nil, fmt.Errorf("revoke %s: %w", what, err)
	}
	type cand struct {
		Revocation
		node     sql.NullString
		notAfter int64
	}
	var cands []cand
	for rows.Next() {
		var c cand
		var rev sql.NullInt64
		if err := rows.Scan(&c.Serial, &c.SPIFFEID, &c.node, &rev, &c.notAfter); err != nil {
			rows.Close()
			return nil, fmt.Errorf("revoke %s: %w", what, err)
		}
		c.AlreadyRevoked = rev.Valid
		cands = append(cands, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("revoke %s: %w", what, err)
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	out := make([]Revocation, 0, len(cands))
	for _, c := range cands {
		out = append(out, c.Revocation)
		if c.AlreadyRevoked {
			continue
		}
		if _, err := tx.ExecContext(ctx, db.q.rebind("UPDATE certificates SET revoked_at_us = ?, revocation_reason = ? WHERE serial = ? AND revoked_at_us IS NULL"),
			toUS(at), reason, c.Serial); err != nil {
			return nil, fmt.Errorf("revoke %s: %w", c.Serial, err)
		}
		if _, err := tx.ExecContext(ctx, db.q.rebind(`INSERT INTO revocation_events (serial, spiffe_id, node_id, reason, revoked_at_us, not_after_us)
			VALUES (?, ?, ?, ?, ?, ?)`), c.Serial, c.SPIFFEID, c.node, reason, toUS(at), c.notAfter); err != nil {
			return nil, fmt.Errorf("revoke %s: %w", c.Serial, err)
		}
	}
	if state != nil {
		if err := state(tx); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("revoke %s: %w", what, err)
	}
	return out, nil
}

// revokeCandidates is revokeWhere's query of the certificates cond
// selects, unexpired at its last argument unless includeExpired.
func revokeCandidates(cond string, includeExpired bool) string {
	q := "SELECT serial, spiffe_id, node_id, revoked_at_us, not_after_us FROM certificates WHERE (" + cond + ")"
	if !includeExpired {
		q += " AND not_after_us > ?"
	}
	return q + " ORDER BY issued_at_us, serial"
}

// lineage selects the certificate whose serial is its argument and those
// renewed from it, directly or through other renewals (one set, so that
// the serial index serves it).
const lineage = `serial IN (WITH RECURSIVE lineage(s) AS (
		SELECT serial FROM certificates WHERE serial = ?
		UNION SELECT c.serial FROM certificates c JOIN lineage l ON c.renewed_from = l.s)
	SELECT s FROM lineage)`

// What RevokeLineage (lineage's serial, then the serial again and a time:
// the serial itself, even expired, and its unexpired renewals),
// RevokeIdentity and RevokeNode (its SPIFFE ID twice) revoke: conditions
// for revokeCandidates.
const (
	lineageCond  = lineage + " AND (serial = ? OR not_after_us > ?)"
	identityCond = "spiffe_id = ?"
	nodeCond     = "spiffe_id = ? OR node_id = ?"
)

// RevokeLineage revokes one certificate, expired or not, and every
// unexpired certificate renewed from it (directly or through other
// renewals), in one transaction: a renewal that committed just before the
// revocation is revoked with its parent. The named certificate comes first.
// Revoking twice is harmless: the first time and reason stand. An unknown
// serial yields ErrNotFound.
func (db *DB) RevokeLineage(ctx context.Context, serial string, reason int, at time.Time) ([]Revocation, error) {
	revs, err := db.revokeWhere(ctx, "certificate "+serial, lineageCond,
		[]any{serial, serial, toUS(at)}, reason, at, true, nil)
	if err != nil {
		return nil, err
	}
	for i, r := range revs {
		if r.Serial == serial {
			revs[0], revs[i] = revs[i], revs[0]
			break
		}
	}
	if revs[0].Serial != serial {
		return nil, fmt.Errorf("certificate %s: %w", serial, ErrNotFound)
	}
	return revs, nil
}

// RevokeSerial is RevokeLineage, answering for the named certificate only.
func (db *DB) RevokeSerial(ctx context.Context, serial string, reason int, at time.Time) (Revocation, error) {
	revs, err := db.RevokeLineage(ctx, serial, reason, at)
	if err != nil {
		return Revocation{}, err
	}
	return revs[0], nil
}

// RevokeIdentity revokes every certificate of spiffeID still unexpired at
// at, in one transaction, and returns them (those revoked before included,
// marked AlreadyRevoked). No such certificate yields ErrNotFound. The
// revocation is also kept as state: a certificate of spiffeID issued at or
// before at can no longer renew, whatever its own record says.
func (db *DB) RevokeIdentity(ctx context.Context, spiffeID string, reason int, at time.Time) ([]Revocation, error) {
	return db.revokeWhere(ctx, "no unexpired certificate of "+spiffeID, identityCond, []any{spiffeID}, reason, at, false,
		func(tx *sql.Tx) error {
			return db.recordRevokedState(ctx, tx, "revoked_identities", "spiffe_id", spiffeID, reason, at)
		})
}

// RevokeNode revokes a node: its own unexpired certificates and every
// unexpired workload certificate obtained through it, in one transaction.
// The revocation is also kept as state: a certificate of or through the
// node issued at or before at can no longer renew or obtain anything.
func (db *DB) RevokeNode(ctx context.Context, nodeID string, reason int, at time.Time) ([]Revocation, error) {
	return db.revokeWhere(ctx, "no unexpired certificate of or through "+nodeID, nodeCond, []any{nodeID, nodeID}, reason, at, false,
		func(tx *sql.Tx) error {
			return db.recordRevokedState(ctx, tx, "revoked_nodes", "node_id", nodeID, reason, at)
		})
}

// RevocationsSince returns up to limit events after seq, in order.
func (db *DB) RevocationsSince(ctx context.Context, seq int64, limit int) ([]RevocationEvent, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := db.reader.QueryContext(ctx, db.q.rebind(`SELECT seq, serial, spiffe_id, node_id, reason, revoked_at_us, not_after_us
		FROM revocation_events WHERE seq > ? ORDER BY seq LIMIT ?`), seq, limit)
	if err != nil {
		return nil, fmt.Errorf("read revocations: %w", err)
	}
	defer rows.Close()
	var out []RevocationEvent
	for rows.Next() {
		var e RevocationEvent
		var node sql.NullString
		var rev, na int64
		if err := rows.Scan(&e.Seq, &e.Serial, &e.SPIFFEID, &node, &e.Reason, &rev, &na); err != nil {
			return nil, fmt.Errorf("read revocations: %w", err)
		}
		e.NodeID, e.RevokedAt, e.NotAfter = node.String, fromUS(rev), fromUS(na)
		out = append(out, e)
	}
	return out, rows.Err()
}

// LastRevocationSeq returns the sequence number of the newest revocation,
// or 0.
func (db *DB) LastRevocationSeq(ctx context.Context) (int64, error) {
	var seq int64
	if err := db.reader.QueryRowContext(ctx, "SELECT COALESCE(MAX(seq), 0) FROM revocation_events").Scan(&seq); err != nil {
		return 0, fmt.Errorf("read revocations: %w", err)
	}
	return seq, nil
}

// RevokedEntry is one line of a CRL.
type RevokedEntry struct {
	Serial    string
	RevokedAt time.Time
	Reason    int
}

// revokedUnexpiredQuery reads a CRL's lines.
const revokedUnexpiredQuery = `SELECT serial, revoked_at_us, revocation_reason FROM certificates
		WHERE revoked_at_us IS NOT NULL AND not_after_us > ? ORDER BY revoked_at_us, serial`

// RevokedUnexpired lists the certificates revoked and not yet expired at
// now: what a CRL must carry.
func (db *DB) RevokedUnexpired(ctx context.Context, now time.Time) ([]RevokedEntry, error) {
	rows, err := db.reader.QueryContext(ctx, db.q.rebind(revokedUnexpiredQuery), toUS(now))
	if err != nil {
		return nil, fmt.Errorf("read revoked certificates: %w", err)
	}
	defer rows.Close()
	var out []RevokedEntry
	for rows.Next() {
		var e RevokedEntry
		var rev int64
		var reason sql.NullInt64
		if err := rows.Scan(&e.Serial, &rev, &reason); err != nil {
			return nil, fmt.Errorf("read revoked certificates: %w", err)
		}
		e.RevokedAt, e.Reason = fromUS(rev), int(reason.Int64)
		out = append(out, e)
	}
	return out, rows.Err()
}

func isUniqueViolation(err error) bool {
	s := err.Error()
	return strings.Contains(s, "UNIQUE constraint failed") || strings.Contains(s, "SQLSTATE 23505") || strings.Contains(s, "duplicate key value")
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }
