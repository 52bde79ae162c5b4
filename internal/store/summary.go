package store

import (
	"context"
	"fmt"
	"time"
)

// Live is what a summary needs of one unexpired, unrevoked certificate.
type Live struct {
	Serial   string
	SPIFFEID string
	NotAfter time.Time
	IssuedAt time.Time
}

// liveQuery reads ForEachLive's rows, live at its second argument (the
// first is its day, as usPerDay counts them), from the live certificates'
// index alone: certificates_live_by_expiry_day, from that day on (see
// migration 0016).
const liveQuery = `SELECT serial, spiffe_id, not_after_us, issued_at_us
		FROM certificates WHERE not_after_us / 86400000000 >= ? AND not_after_us > ? AND revoked_at_us IS NULL`

// ForEachLive calls fn for every certificate unexpired and unrevoked at
// now, in no particular order, reading only the columns a summary needs
// (never the certificate itself). It stops at fn's first error and
// returns it.
func (db *DB) ForEachLive(ctx context.Context, now time.Time, fn func(Live) error) error {
	rows, err := db.reader.QueryContext(ctx, db.q.rebind(liveQuery), toUS(now)/usPerDay, toUS(now))
	if err != nil {
		return fmt.Errorf("list live certificates: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var l Live
		var na, ia int64
		if err := rows.Scan(&l.Serial, &l.SPIFFEID, &na, &ia); err != nil {
			return fmt.Errorf("list live certificates: %w", err)
		}
		l.NotAfter, l.IssuedAt = fromUS(na), fromUS(ia)
		if err := fn(l); err != nil {
			return err
		}
	}
	return rows.Err()
}

// recentRevocationsQuery reads RecentRevocations' rows, at most its argument.
const recentRevocationsQuery = "SELECT " + certSelect +
	" FROM certificates WHERE revoked_at_us IS NOT NULL ORDER BY revoked_at_us DESC, serial DESC LIMIT ?"

// RecentRevocations returns the limit most recently revoked certificates,
// latest first (expired ones included), from the revocation index.
func (db *DB) RecentRevocations(ctx context.Context, limit int) ([]Certificate, error) {
	rows, err := db.reader.QueryContext(ctx, db.q.rebind(recentRevocationsQuery), limit)
	if err != nil {
		return nil, fmt.Errorf("list recent revocations: %w", err)
	}
	defer rows.Close()
	var out []Certificate
	for rows.Next() {
		c, err := scanCert(rows)
		if err != nil {
			return nil, fmt.Errorf("list recent revocations: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
