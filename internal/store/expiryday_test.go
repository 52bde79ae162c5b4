package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/pgtest"
)

// TestExpiringPageByDayMatchesIssueOrder: the expiring page's query by day
// of expiry (listByExpiryDay) lists, page after page by cursor, exactly
// the certificates of the list order's query (listByIssueOrder) in the
// same order, and both exactly what the filter says in Go: on a store of
// lifetimes from an hour to forty days, equal issue times, revoked rows,
// expiries on and beside midnight, for windows that start or end at
// midnight, are empty, or span more days than the day query reads (which
// must then fall back to the list order).
func TestExpiringPageByDayMatchesIssueOrder(t *testing.T) {
	for name, url := range map[string]func(t *testing.T) string{
		"sqlite":   func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "expiry.db") },
		"postgres": func(t *testing.T) string { return pgtest.Start(t).NewDatabase(t) },
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			db, err := Open(ctx, url(t))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			midnight := time.Date(2030, 3, 10, 0, 0, 0, 0, time.UTC)
			now := midnight.Add(-5 * time.Hour)
			every := expiryDayLoad(t, db, now, midnight)

			const us = time.Microsecond
			starts := map[string]time.Time{"now": now, "midnight": midnight, "midnight-1us": midnight.Add(-us), "in 3 days": now.Add(72 * time.Hour)}
			windows := map[string]time.Duration{"empty": 0, "backwards": -time.Hour, "1us": us, "1h": time.Hour, "to midnight": 5 * time.Hour,
				"to midnight+1us": 5*time.Hour + us, "24h": 24 * time.Hour, "5.8 days": 139 * time.Hour, "31 days": 31 * 24 * time.Hour,
				"33 days": 33 * 24 * time.Hour, "60 days": 60 * 24 * time.Hour}
			byDay := 0
			for sn, start := range starts {
				for wn, w := range windows {
					for _, limit := range []int{5, 100, 0} {
						f := CertificateFilter{ValidAt: start, ExpiresBefore: start.Add(w), Revoked: NotRevoked, Limit: limit}
						what := fmt.Sprintf("from %s, window %s, limit %d", sn, wn, limit)
						if _, _, ok := db.listByExpiryDay(f); ok {
							byDay++
						} else if w <= 31*24*time.Hour {
							t.Errorf("%s: not listed by day of expiry", what)
						}
						expiryDayCompare(t, db, what, f, every)
					}
				}
			}
			if byDay == 0 {
				t.Fatal("no window was listed by day of expiry: the test compared the list order's query with itself")
			}
		})
	}
}

// expiryDayLoad stores certificates issued before now, of many
// lifetimes (some ending exactly at, or a microsecond either side of,
// midnight), some issued at the same microsecond, one in seven revoked,
// and returns them all newest first.
func expiryDayLoad(t *testing.T, db *DB, now, midnight time.Time) []Certificate {
	t.Helper()
	ctx := context.Background()
	lifetimes := []time.Duration{time.Hour, 5 * time.Hour, 24*time.Hour - time.Second, 24 * time.Hour, 25 * time.Hour,
		72 * time.Hour, 139 * time.Hour, 20 * 24 * time.Hour, 32 * 24 * time.Hour, 40 * 24 * time.Hour}
	tx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	insert := db.q.rebind(`INSERT INTO certificates (serial, spiffe_id, not_before_us, not_after_us, issued_at_us, der,
		requested_by, revoked_at_us, revocation_reason) VALUES (?, ?, ?, ?, ?, ?, 'test', ?, ?)`)
	issued := now
	for i := range 1500 {
		if i%3 != 1 { // every third shares its issue time with the one before
			issued = issued.Add(-7 * time.Minute)
		}
		notAfter := issued.Add(lifetimes[i%len(lifetimes)])
		if i%11 == 0 { // on midnight, a day or two ahead, or beside it
			notAfter = midnight.Add(time.Duration(i%3-1)*time.Microsecond + time.Duration(i%4)*24*time.Hour)
		}
		var revoked, reason any
		if i%7 == 0 {
			revoked, reason = toUS(issued.Add(time.Second)), 1
		}
		if _, err := tx.Exec(insert, fmt.Sprintf("%016x", 1<<60+i), fmt.Sprintf("spiffe://example.org/w/%d", i%40),
			toUS(issued.Add(-time.Minute)), toUS(notAfter), toUS(issued), []byte{0}, revoked, reason); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	every, err := db.ListCertificates(ctx, CertificateFilter{Limit: 10_000})
	if err != nil || len(every) != 1500 {
		t.Fatalf("all: %d certificates, %v", len(every), err)
	}
	return every
}

// expiryDayCompare pages through f with both queries and compares every
// page (the first 20 of small pages), and the whole listing with what f
// selects of every.
func expiryDayCompare(t *testing.T, db *DB, what string, f CertificateFilter, every []Certificate) {
	t.Helper()
	var want []string
	for _, c := range every {
		if listMatches(f, c) {
			want = append(want, c.Serial)
		}
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	var listed []string
	for page := 0; ; page++ {
		got, err := db.ListCertificates(context.Background(), f)
		if err != nil {
			t.Fatalf("%s, page %d: %v", what, page, err)
		}
		f.Limit = limit
		q, args := db.listByIssueOrder(f)
		ref := expiryDayQuery(t, db, q, args)
		if fmt.Sprint(serialsOf(got)) != fmt.Sprint(serialsOf(ref)) {
			t.Fatalf("%s, page %d after %q: listed %v, the list order's query %v", what, page, f.After.Serial, serialsOf(got), serialsOf(ref))
		}
		listed = append(listed, serialsOf(got)...)
		if len(got) < limit || len(listed) > len(every) {
			break
		}
		if page == 20 {
			return
		}
		f.After = got[len(got)-1].Cursor()
	}
	if fmt.Sprint(listed) != fmt.Sprint(want) {
		t.Errorf("%s: listed %d certificates, want the %d that match, in order", what, len(listed), len(want))
	}
}

func expiryDayQuery(t *testing.T, db *DB, q string, args []any) []Certificate {
	t.Helper()
	rows, err := db.reader.QueryContext(context.Background(), q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out []Certificate
	for rows.Next() {
		c, err := scanCert(rows)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
