package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"
)

// SetPartnerScope replaces what the partnership name may reach. An
// unknown partnership yields ErrNotFound, an ended one
// ErrPartnershipEnded.
func (db *DB) SetPartnerScope(ctx context.Context, name string, services, requests []string) error {
	res, err := db.writer.ExecContext(ctx, db.q.rebind("UPDATE partners SET services = ?, requests = ? WHERE name = ? AND ended_at_us = 0"),
		jsonList(services), jsonList(requests), name)
	if err != nil {
		return fmt.Errorf("set the scope of partnership %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil
	}
	p, err := db.GetPartner(ctx, name)
	if err != nil {
		return err
	}
	return fmt.Errorf("partnership %s, at %s by %s: %w", name, p.EndedAt.Format(time.RFC3339), p.EndedBy, ErrPartnershipEnded)
}

// Sighting is a partner identity seen by a proxy.
type Sighting struct {
	// Partner names the partnership the identity belongs to.
	Partner  string
	SPIFFEID string
	// Reporter is the SPIFFE ID of the proxy that saw it.
	Reporter string
	At       time.Time
}

// MaxSightingsPerReporter is the most sightings kept of one partnership
// by one reporter: a reporter that reports more distinct identities
// replaces its own oldest sightings, never another reporter's.
const MaxSightingsPerReporter = 1000

// MaxSightingsPerPartner is the most sightings kept of one partnership, by
// all reporters: beyond it the reporters holding the most lose their
// oldest first, so that reporters inventing identities push out each
// other's sightings before those of one that reports few. One reporter
// holds at most a tenth of them (MaxSightingsPerReporter).
const MaxSightingsPerPartner = 10 * MaxSightingsPerReporter

// RecordSightings keeps, per identity and reporter, the latest time seen:
// an older report never moves a sighting back. The table stays bounded
// whatever reporters send: in the same transaction, each partnership and
// reporter keeps its MaxSightingsPerReporter latest sightings and each
// partnership MaxSightingsPerPartner, taken from the reporters holding the
// most. (On PostgreSQL, replicas
// recording at the same moment may each keep their own report on top of
// a cap until the next report trims it.)
func (db *DB) RecordSightings(ctx context.Context, sightings []Sighting) error {
	if len(sightings) == 0 {
		return nil
	}
	tx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("record sightings: %w", err)
	}
	defer tx.Rollback()
	q := db.q.rebind(`INSERT INTO partner_sightings (partner, spiffe_id, reporter, seen_at_us) VALUES (?, ?, ?, ?)
		ON CONFLICT (spiffe_id, reporter) DO UPDATE SET partner = excluded.partner, seen_at_us = excluded.seen_at_us
		WHERE excluded.seen_at_us > partner_sightings.seen_at_us`)
	type key struct{ partner, reporter string }
	touched := map[key]bool{}
	for _, s := range sightings {
		if _, err := tx.ExecContext(ctx, q, s.Partner, s.SPIFFEID, s.Reporter, toUS(s.At)); err != nil {
			return fmt.Errorf("record the sighting of %s by %s: %w", s.SPIFFEID, s.Reporter, err)
		}
		touched[key{s.Partner, s.Reporter}] = true
	}
	partners := map[string]bool{}
	for k := range touched {
		if err := db.trimSightings(ctx, tx, "partner = ? AND reporter = ?", MaxSightingsPerReporter, k.partner, k.reporter); err != nil {
			return fmt.Errorf("keep the latest %d sightings of partnership %s by %s: %w", MaxSightingsPerReporter, k.partner, k.reporter, err)
		}
		partners[k.partner] = true
	}
	for p := range partners {
		if err := db.trimPartnerSightings(ctx, tx, p); err != nil {
			return fmt.Errorf("keep %d sightings of partnership %s: %w", MaxSightingsPerPartner, p, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("record sightings: %w", err)
	}
	return nil
}

// trimPartnerSightings keeps at most MaxSightingsPerPartner sightings of
// partnership partner, taken away fairly (fairShares): each reporter cut
// keeps its latest.
func (db *DB) trimPartnerSightings(ctx context.Context, tx *sql.Tx, partner string) error {
	rows, err := tx.QueryContext(ctx, db.q.rebind("SELECT reporter, COUNT(*) FROM partner_sightings WHERE partner = ? GROUP BY reporter"), partner)
	if err != nil {
		return err
	}
	defer rows.Close()
	counts := map[string]int{}
	for rows.Next() {
		var r string
		var n int
		if err := rows.Scan(&r, &n); err != nil {
			return err
		}
		counts[r] = n
	}
	if err := rows.Err(); err != nil {
		return err
	}
	rows.Close()
	for r, keep := range fairShares(counts, MaxSightingsPerPartner) {
		if err := db.trimSightings(ctx, tx, "partner = ? AND reporter = ?", keep, partner, r); err != nil {
			return fmt.Errorf("keep the latest %d by %s: %w", keep, r, err)
		}
	}
	return nil
}

// fairShares says how many of their sightings (counts, by reporter) the
// reporters that must lose some keep, so that all keep at most limit:
// sightings are taken away one at a time from the reporter holding the
// most (of equals, the one whose name sorts first), so that reporters
// inventing identities push out each other's, never the rows of one that
// holds fewer than they do. It returns nil when nothing is over limit.
func fairShares(counts map[string]int, limit int) map[string]int {
	total, most := 0, 0
	for _, n := range counts {
		total, most = total+n, max(most, n)
	}
	if total <= limit {
		return nil
	}
	held := func(level int) (n int) {
		for _, c := range counts {
			n += min(c, level)
		}
		return n
	}
	// The highest level every reporter can be cut down to: held(lo) <=
	// limit < held(hi).
	lo, hi := 0, most
	for hi-lo > 1 {
		if m := (lo + hi) / 2; held(m) <= limit {
			lo = m
		} else {
			hi = m
		}
	}
	var cut []string
	for r, n := range counts {
		if n > lo {
			cut = append(cut, r)
		}
	}
	slices.Sort(cut)
	// The room left under limit goes back, one each, to the last of them.
	spare := limit - held(lo)
	keep := make(map[string]int, len(cut))
	for i, r := range cut {
		keep[r] = lo
		if i >= len(cut)-spare {
			keep[r] = lo + 1
		}
	}
	return keep
}

// trimSightings deletes the sightings matching where (args bind it) but
// the keep latest, when there are more.
func (db *DB) trimSightings(ctx context.Context, tx *sql.Tx, where string, keep int, args ...any) error {
	var n int
	if err := tx.QueryRowContext(ctx, db.q.rebind("SELECT COUNT(*) FROM partner_sightings WHERE "+where), args...).Scan(&n); err != nil || n <= keep {
		return err
	}
	_, err := tx.ExecContext(ctx, db.q.rebind(`DELETE FROM partner_sightings WHERE `+where+` AND (spiffe_id, reporter) NOT IN
		(SELECT spiffe_id, reporter FROM partner_sightings WHERE `+where+` ORDER BY seen_at_us DESC, spiffe_id, reporter LIMIT ?)`),
		slices.Concat(args, args, []any{keep})...)
	return err
}

// PartnerSightings returns the partnership name's sightings, latest first,
// at most limit of them.
func (db *DB) PartnerSightings(ctx context.Context, name string, limit int) ([]Sighting, error) {
	rows, err := db.reader.QueryContext(ctx, db.q.rebind(`SELECT partner, spiffe_id, reporter, seen_at_us FROM partner_sightings
		WHERE partner = ? ORDER BY seen_at_us DESC, spiffe_id, reporter LIMIT ?`), name, limit)
	if err != nil {
		return nil, fmt.Errorf("list the sightings of partnership %s: %w", name, err)
	}
	defer rows.Close()
	var out []Sighting
	for rows.Next() {
		var s Sighting
		var at int64
		if err := rows.Scan(&s.Partner, &s.SPIFFEID, &s.Reporter, &at); err != nil {
			return nil, fmt.Errorf("list the sightings of partnership %s: %w", name, err)
		}
		s.At = fromUS(at)
		out = append(out, s)
	}
	return out, rows.Err()
}

// Holdings is what a partnership holds at a moment: its live (unexpired,
// unrevoked) certificates.
type Holdings struct {
	Live int
	// SoonestExpiry is when the first live certificate expires; zero when
	// none is live.
	SoonestExpiry time.Time
}

// HoldingsUnder counts the live certificates at at whose SPIFFE ID starts
// with idPrefix (a partnership's).
func (db *DB) HoldingsUnder(ctx context.Context, idPrefix string, at time.Time) (Holdings, error) {
	var h Holdings
	var soonest sql.NullInt64
	err := db.reader.QueryRowContext(ctx, db.q.rebind(`SELECT COUNT(*), MIN(not_after_us) FROM certificates
		WHERE spiffe_id LIKE ? ESCAPE '\' AND not_after_us > ? AND revoked_at_us IS NULL`), likePrefix(idPrefix), toUS(at)).Scan(&h.Live, &soonest)
	if err != nil {
		return h, fmt.Errorf("count the certificates under %s: %w", idPrefix, err)
	}
	if soonest.Valid {
		h.SoonestExpiry = fromUS(soonest.Int64)
	}
	return h, nil
}
