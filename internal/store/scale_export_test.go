package store

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// This file lends TestScale (package store_test, which needs the real CRL
// and OCSP code of internal/revocation/publish, an importer of this
// package) the loader and the query plans of the store's internals.

// ScaleLoad inserts certificates lo..hi-1 of a store of n certificates of
// ids identities, as scaleLoad describes, then refreshes the planner's
// statistics.
func ScaleLoad(t testing.TB, db *DB, lo, hi, n, ids int, now time.Time) {
	t.Helper()
	scaleLoadRange(t, db, lo, hi, n, ids, now)
	scaleAnalyze(t, db)
}

// ScaleSerial is the serial of the i-th certificate ScaleLoad makes.
func ScaleSerial(i int) string { return scaleSerial(i) }

// ScaleCursor is the list cursor just after the i-th of n certificates
// ScaleLoad made at now: a page from there starts at certificate i-1.
func ScaleCursor(i, n int, now time.Time) Cursor {
	return Cursor{IssuedAt: fromUS(scaleIssuedUS(i, n, now)), Serial: scaleSerial(i)}
}

// ScaleListPlan returns the query plan of ListCertificates for f.
func ScaleListPlan(t *testing.T, db *DB, f CertificateFilter) string {
	t.Helper()
	q, args := db.listCertificatesQuery(f)
	return scalePlan(t, db, q, args)
}

// ScaleRevocationPlans returns the query plans of the CRL's read at now and
// of the certificate lookup OCSP makes.
func ScaleRevocationPlans(t *testing.T, db *DB, now time.Time) (crl, ocsp string) {
	t.Helper()
	return scalePlan(t, db, db.q.rebind(revokedUnexpiredQuery), []any{toUS(now)}),
		scalePlan(t, db, db.q.rebind("SELECT "+certSelect+" FROM certificates WHERE serial = ?"), []any{scaleSerial(7)})
}

func scalePlan(t *testing.T, db *DB, q string, args []any) string {
	explain := "EXPLAIN QUERY PLAN "
	if db.kind == "postgres" {
		explain = "EXPLAIN "
	}
	return strings.Join(explainRows(t, db, explain+q, args), "; ")
}

func scaleSerial(i int) string { return fmt.Sprintf("%016x", 0x1000000000000000+i) }

// scaleIssuedUS is when the i-th of n certificates was issued: one a
// second, the newest a second before now.
func scaleIssuedUS(i, n int, now time.Time) int64 { return toUS(now) - int64(n-i)*1e6 }

// scaleLoad inserts n certificates of ids identities, issued one a second
// up to now, each valid n/2 seconds (so the older half has expired), one in
// fifty revoked a second after its issue (a CRL of the unexpired half
// carries 1% of the store), one in ten obtained through one of 1,000
// nodes, then refreshes the planner's statistics.
func scaleLoad(t testing.TB, db *DB, n, ids int, now time.Time) {
	t.Helper()
	scaleLoadRange(t, db, 0, n, n, ids, now)
	scaleAnalyze(t, db)
}

// scaleLoadRange inserts certificates lo..hi-1 of scaleLoad's n, made by
// the database itself (a row series), 100,000 to a transaction.
func scaleLoadRange(t testing.TB, db *DB, lo, hi, n, ids int, now time.Time) {
	t.Helper()
	// The same rows in either dialect; der is a leaf's size of zeros (the
	// queries never parse it).
	const cols = `INSERT INTO certificates (serial, spiffe_id, not_before_us, not_after_us, issued_at_us, der,
		requested_by, revoked_at_us, revocation_reason, node_id) `
	const values = `'spiffe://example.org/w/' || (i % ?), iss - 60000000, iss + CAST(? AS BIGINT) * 1000000, iss, DER, 'bench',
		CASE WHEN i % 50 = 0 THEN iss + 1000000 END, CASE WHEN i % 50 = 0 THEN 1 END,
		CASE WHEN i % 10 = 0 THEN 'spiffe://example.org/node/' || (i % 1000) END`
	q := `WITH RECURSIVE s(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM s WHERE i + 1 < ?),
		r(i, iss) AS (SELECT i, ? - (? - i) * 1000000 FROM s) ` + cols +
		`SELECT printf('%016x', 1152921504606846976 + i), ` + strings.Replace(values, "DER", "zeroblob(300)", 1) + ` FROM r`
	if db.kind == "postgres" {
		q = `WITH r(i, iss) AS (SELECT i, ?::bigint - (?::bigint - i) * 1000000 FROM generate_series(?::bigint, ?::bigint - 1) AS i) ` + cols +
			`SELECT lpad(to_hex(1152921504606846976 + i), 16, '0'), ` + strings.Replace(values, "DER", "decode(repeat('00', 300), 'hex')", 1) + ` FROM r`
	}
	const chunk = 100_000
	for a := lo; a < hi; a += chunk {
		b := min(a+chunk, hi)
		args := []any{a, b, toUS(now), n, ids, n / 2}
		if db.kind == "postgres" {
			args = []any{toUS(now), n, a, b, ids, n / 2}
		}
		if _, err := db.writer.ExecContext(context.Background(), db.q.rebind(q), args...); err != nil {
			t.Fatalf("load certificates %d..%d: %v", a, b, err)
		}
	}
}

func scaleAnalyze(t testing.TB, db *DB) {
	t.Helper()
	if _, err := db.writer.Exec("ANALYZE"); err != nil {
		t.Fatal(err)
	}
}
