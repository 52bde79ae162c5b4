package store

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/pgtest"
)

// TestLookupPlans: on SQLite and PostgreSQL, each lookup of certificates
// other than the list pages (listplan_test.go) reads the index meant for
// it, never the whole table, now that the indexes an enrollment need not
// write hold only the rows looked up (migration 0016): by node and renewal
// chain (partial indexes, which an equality implies), revoked rows for the
// CRL and the recent revocations (in their order, no sort), live rows for
// the summary (from the live index alone), and by identity.
func TestLookupPlans(t *testing.T) {
	now := time.Now()
	type lookup struct {
		query string
		args  []any
		index string // the index the plan must name
	}
	lookups := map[string]lookup{
		"revoke node":        {revokeCandidates(nodeCond, false), []any{"spiffe://example.org/node/7", "spiffe://example.org/node/7", toUS(now)}, "certificates_by_node"},
		"revoke lineage":     {revokeCandidates(lineageCond, true), []any{"1000000000000040", "1000000000000040", toUS(now)}, "certificates_by_parent"},
		"revoke identity":    {revokeCandidates(identityCond, false), []any{"spiffe://example.org/w/100", toUS(now)}, "certificates_by_identity"},
		"CRL":                {revokedUnexpiredQuery, []any{toUS(now)}, "certificates_revoked"},
		"recent revocations": {recentRevocationsQuery, []any{10}, "certificates_revoked"},
		"live summary":       {liveQuery, []any{toUS(now) / usPerDay, toUS(now)}, "certificates_live_by_expiry_day"},
	}
	check := func(t *testing.T, db *DB, explain func(q string, args []any) string) {
		scaleLoad(t, db, 5000, 500, now)
		// Renewal chains: each certificate whose serial ends in 1 or 2
		// renews the one issued just before it (…0, …1, …2).
		if _, err := db.writer.Exec(`UPDATE certificates SET renewed_from = (SELECT p.serial FROM certificates p
			WHERE p.issued_at_us < certificates.issued_at_us ORDER BY p.issued_at_us DESC LIMIT 1)
			WHERE serial LIKE '%1' OR serial LIKE '%2'`); err != nil {
			t.Fatal(err)
		}
		scaleAnalyze(t, db)
		for name, l := range lookups {
			plan := explain(l.query, l.args)
			t.Logf("%s: %s", name, plan)
			if !strings.Contains(plan, l.index+" ") || strings.Contains(plan, "SCAN certificates") && !strings.Contains(plan, "INDEX") ||
				strings.Contains(plan, "Seq Scan") {
				t.Errorf("%s: does not read %s: %s", name, l.index, plan)
			}
			if name == "live summary" && db.kind == "sqlite" && !strings.Contains(plan, "COVERING INDEX "+l.index) {
				t.Errorf("%s: reads the table, not %s alone: %s", name, l.index, plan)
			}
			if strings.Contains(plan, "TEMP B-TREE") && !strings.HasPrefix(name, "revoke") {
				t.Errorf("%s: sorts its rows instead of reading them in order: %s", name, plan)
			}
		}
	}
	onBothStores(t, check)
}

// onBothStores runs check on a new SQLite store and a new PostgreSQL one,
// with explain, which gives a query's plan (PostgreSQL's with sequential
// scans off: a few thousand rows fit one better than any index, so the
// plan shows what the indexes offer).
func onBothStores(t *testing.T, check func(t *testing.T, db *DB, explain func(q string, args []any) string)) {
	ctx := context.Background()
	t.Run("sqlite", func(t *testing.T) {
		db, err := Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "plan.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		check(t, db, func(q string, args []any) string {
			return strings.Join(explainRows(t, db, "EXPLAIN QUERY PLAN "+db.q.rebind(q), args), "; ")
		})
	})
	t.Run("postgres", func(t *testing.T) {
		db, err := Open(ctx, pgtest.Start(t).NewDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		check(t, db, func(q string, args []any) string {
			return strings.Join(explainRows(t, db, "SET LOCAL enable_seqscan = off; EXPLAIN "+db.q.rebind(q), args), "; ")
		})
	})
}
