package store

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// listFilters are the dashboard's certificate filters (status valid,
// expiring, revoked), first pages and pages after cursor.
func listFilters(now time.Time, after Cursor) map[string]CertificateFilter {
	return map[string]CertificateFilter{
		"revoked":             {Revoked: OnlyRevoked, Limit: 100},
		"revoked, next page":  {Revoked: OnlyRevoked, After: after, Limit: 100},
		"unrevoked valid":     {ValidAt: now, Revoked: NotRevoked, Limit: 100},
		"expiring":            {ValidAt: now, ExpiresBefore: now.Add(24 * time.Hour), Revoked: NotRevoked, Limit: 100},
		"expiring, next page": {ValidAt: now, ExpiresBefore: now.Add(24 * time.Hour), Revoked: NotRevoked, After: after, Limit: 100},
		"identity, revoked":   {SPIFFEID: "spiffe://example.org/w/100", Revoked: OnlyRevoked, Limit: 100},
	}
}

// TestListCertificatesPlans: on SQLite and PostgreSQL, every certificate
// listing the API offers selects the right rows in the right order, reads
// through an index, and a page after a cursor starts its index range at the
// cursor (a condition the index can seek to, not a filter applied while
// walking from the newest row). On SQLite, whose planner misjudged the
// NULL range of the revocation index, no status filter sorts its rows.
func TestListCertificatesPlans(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	check := func(t *testing.T, db *DB, explain func(q string, args []any) string, seeks func(plan string) bool) {
		scaleLoad(t, db, 5000, 500, now)
		first, err := db.ListCertificates(ctx, CertificateFilter{Limit: 100})
		if err != nil || len(first) != 100 {
			t.Fatalf("first page: %d certificates, %v", len(first), err)
		}
		deep := first[len(first)-1].Cursor()
		all := listFilters(now, deep)
		all["next page"] = CertificateFilter{After: deep, Limit: 100}
		all["valid, next page"] = CertificateFilter{ValidAt: now, After: deep, Limit: 100}
		every, err := db.ListCertificates(ctx, CertificateFilter{Limit: 10_000})
		if err != nil || len(every) != 5000 {
			t.Fatalf("all: %d certificates, %v", len(every), err)
		}
		for name, f := range all {
			f.Limit = 10_000
			got, err := db.ListCertificates(ctx, f)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			var want []string
			for _, c := range every {
				if listMatches(f, c) {
					want = append(want, c.Serial)
				}
			}
			if g := serialsOf(got); fmt.Sprint(g) != fmt.Sprint(want) || len(want) == 0 {
				t.Errorf("%s: listed %d certificates, want the %d that match, in order", name, len(g), len(want))
			}
			f.Limit = 100
			q, args := db.listCertificatesQuery(f)
			plan := explain(q, args)
			if strings.Contains(plan, "SCAN certificates") && !strings.Contains(plan, "INDEX") || strings.Contains(plan, "Seq Scan") {
				t.Errorf("%s: a full scan of certificates: %s", name, plan)
			}
			byDay := strings.Contains(plan, "certificates_live_by_expiry_day")
			if strings.HasPrefix(name, "expiring") {
				// The newest rows of each day of expiry in the
				// window, in list order from the day's index; only
				// those few (days x limit) are sorted, twice: into
				// one list, then the page read by serial.
				t.Logf("%s: %s", name, plan)
				if !byDay || strings.Count(plan, "TEMP B-TREE") > 2 {
					t.Errorf("%s: does not read the newest rows of each day from certificates_live_by_expiry_day: %s", name, plan)
				}
			} else if f.SPIFFEID == "" && strings.Contains(plan, "TEMP B-TREE") {
				t.Errorf("%s: sorts the matching rows instead of reading them in the list order's index: %s", name, plan)
			}
			if f.After.Serial != "" && !seeks(plan) {
				t.Errorf("%s: the page does not seek to the cursor: %s", name, plan)
			}
		}
	}
	onBothStores(t, func(t *testing.T, db *DB, explain func(q string, args []any) string) {
		if db.kind == "sqlite" {
			check(t, db, explain, func(plan string) bool {
				// Each day of expiry starts at the cursor.
				if days := strings.Count(plan, "INDEX certificates_live_by_expiry_day"); days > 0 {
					return strings.Count(plan, "INDEX certificates_live_by_expiry_day (<expr>=? AND (issued_at_us,serial)<(?,?))") == days
				}
				return strings.Contains(plan, "SEARCH certificates USING INDEX certificates_by_issue_order ((issued_at_us,serial)<(?,?))") ||
					strings.Contains(plan, "SEARCH certificates USING INDEX certificates_revoked_by_issue_order ((issued_at_us,serial)<(?,?))")
			})
			return
		}
		check(t, db, explain, func(plan string) bool {
			// PostgreSQL weighs its statistics: it may sort the few
			// rows another index finds, but when it walks the list
			// order it must seek to the cursor, not filter up to it.
			// Each day of expiry starts at the cursor.
			if days := strings.Count(plan, "using certificates_live_by_expiry_day"); days > 0 {
				return strings.Count(plan, ") AND (ROW(issued_at_us, serial) < ROW(") == days
			}
			return !strings.Contains(plan, "_by_issue_order") || strings.Contains(plan, "Index Cond: (ROW(issued_at_us, serial) < ROW(")
		})
	})
}

// listMatches is what f selects, said in Go.
func listMatches(f CertificateFilter, c Certificate) bool {
	switch {
	case f.SPIFFEID != "" && c.SPIFFEID != f.SPIFFEID,
		!f.ValidAt.IsZero() && !c.NotAfter.After(f.ValidAt),
		!f.ExpiresBefore.IsZero() && !c.NotAfter.Before(f.ExpiresBefore),
		f.Revoked == OnlyRevoked && !c.Revoked(),
		f.Revoked == NotRevoked && c.Revoked():
		return false
	case f.After.Serial == "":
		return true
	}
	return c.IssuedAt.Before(f.After.IssuedAt) || c.IssuedAt.Equal(f.After.IssuedAt) && c.Serial < f.After.Serial
}

func serialsOf(cs []Certificate) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Serial)
	}
	return out
}

// explainRows runs an EXPLAIN (after an optional "SET ...; " prefix) in a
// transaction of its own, so that SET LOCAL stays in it, and returns the
// last column of each row of the plan.
func explainRows(t *testing.T, db *DB, q string, args []any) []string {
	t.Helper()
	tx, err := db.reader.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if set, rest, ok := strings.Cut(q, "; "); ok {
		if _, err := tx.Exec(set); err != nil {
			t.Fatalf("%s: %v", set, err)
		}
		q = rest
	}
	rows, err := tx.Query(q, args...)
	if err != nil {
		t.Fatalf("explain: %v", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for rows.Next() {
		vals := make([]any, len(cols))
		dest := make([]any, len(cols))
		for i := range dest {
			dest[i] = &vals[i]
		}
		if err := rows.Scan(dest...); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, fmt.Sprint(vals[len(vals)-1]))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return plan
}
