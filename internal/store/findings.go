package store

import (
	"context"
	"fmt"
	"time"
)

// Finding is one thing the issuance log's monitor did not expect, as it
// reported it to the CA. A finding is known by its rule, log index,
// identity and serial: reported again, it counts once more and keeps the
// latest detail.
type Finding struct {
	Rule     string
	LogIndex int64
	SPIFFEID string
	Serial   string
	Detail   string
	// ReportedBy is the identity of the monitor that last reported it.
	ReportedBy    string
	FirstReported time.Time
	LastReported  time.Time
	// Times counts the reports.
	Times int64
}

const findingColumns = "rule, log_index, spiffe_id, serial, detail, reported_by, first_reported_us, last_reported_us, times"

// RecordFindings stores the findings a monitor (by) reported at now, in
// one transaction: all of them or none.
func (db *DB) RecordFindings(ctx context.Context, fs []Finding, by string, now time.Time) error {
	tx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("record log monitor findings: %w", err)
	}
	defer tx.Rollback()
	q := db.q.rebind(`INSERT INTO log_findings (` + findingColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)
		ON CONFLICT (rule, log_index, spiffe_id, serial) DO UPDATE SET detail = excluded.detail,
		reported_by = excluded.reported_by, last_reported_us = excluded.last_reported_us, times = log_findings.times + 1`)
	for _, f := range fs {
		if _, err := tx.ExecContext(ctx, q, f.Rule, f.LogIndex, f.SPIFFEID, f.Serial, f.Detail, by, toUS(now), toUS(now)); err != nil {
			return fmt.Errorf("record the log monitor finding %s at index %d: %w", f.Rule, f.LogIndex, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("record log monitor findings: %w", err)
	}
	return nil
}

// ListFindings returns the limit findings reported most recently, latest
// first, and how many there are in all.
func (db *DB) ListFindings(ctx context.Context, limit int) ([]Finding, int, error) {
	var total int
	if err := db.reader.QueryRowContext(ctx, "SELECT COUNT(*) FROM log_findings").Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count log monitor findings: %w", err)
	}
	rows, err := db.reader.QueryContext(ctx, db.q.rebind("SELECT "+findingColumns+
		" FROM log_findings ORDER BY last_reported_us DESC, log_index DESC LIMIT ?"), limit)
	if err != nil {
		return nil, 0, fmt.Errorf("list log monitor findings: %w", err)
	}
	defer rows.Close()
	var out []Finding
	for rows.Next() {
		var f Finding
		var first, last int64
		if err := rows.Scan(&f.Rule, &f.LogIndex, &f.SPIFFEID, &f.Serial, &f.Detail, &f.ReportedBy, &first, &last, &f.Times); err != nil {
			return nil, 0, fmt.Errorf("list log monitor findings: %w", err)
		}
		f.FirstReported, f.LastReported = fromUS(first), fromUS(last)
		out = append(out, f)
	}
	return out, total, rows.Err()
}
