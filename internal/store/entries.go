package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Entry is a registration entry: workloads on the listed nodes that match
// all the selectors get SPIFFEID.
type Entry struct {
	ID       string
	SPIFFEID string
	// Nodes are node SPIFFE IDs or patterns (spiffe://td/node/*).
	Nodes []string
	// Selectors must all match the calling workload ("unix:uid:1001").
	Selectors []string
	CertTTL   time.Duration
	DNSNames  []string
	Roles     []string
	CreatedAt time.Time
	CreatedBy string
}

const entryColumns = "id, spiffe_id, nodes, selectors, cert_ttl_us, dns_names, roles, created_at_us, created_by"

func scanEntry(s scanner) (Entry, error) {
	var e Entry
	var nodes, sels, dns, roles string
	var ttl, created int64
	if err := s.Scan(&e.ID, &e.SPIFFEID, &nodes, &sels, &ttl, &dns, &roles, &created, &e.CreatedBy); err != nil {
		return e, err
	}
	e.Nodes, e.Selectors, e.DNSNames, e.Roles = parseList(nodes), parseList(sels), parseList(dns), parseList(roles)
	e.CertTTL = time.Duration(ttl) * time.Microsecond
	e.CreatedAt = fromUS(created)
	return e, nil
}

// CreateEntry stores a registration entry.
func (db *DB) CreateEntry(ctx context.Context, e Entry) error {
	_, err := db.writer.ExecContext(ctx, db.q.rebind(`INSERT INTO entries (`+entryColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		e.ID, e.SPIFFEID, jsonList(e.Nodes), jsonList(e.Selectors), e.CertTTL.Microseconds(), jsonList(e.DNSNames), jsonList(e.Roles),
		toUS(e.CreatedAt), e.CreatedBy)
	if err != nil {
		if isUniqueViolation(err) {
			return fmt.Errorf("entry %s: %w", e.ID, ErrAlreadyExists)
		}
		return fmt.Errorf("store entry %s: %w", e.ID, err)
	}
	return nil
}

// GetEntry returns the entry with id, or ErrNotFound.
func (db *DB) GetEntry(ctx context.Context, id string) (Entry, error) {
	e, err := scanEntry(db.reader.QueryRowContext(ctx, db.q.rebind("SELECT "+entryColumns+" FROM entries WHERE id = ?"), id))
	if errors.Is(err, sql.ErrNoRows) {
		return e, fmt.Errorf("entry %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return e, fmt.Errorf("read entry %s: %w", id, err)
	}
	return e, nil
}

// ListEntries returns every entry, oldest first.
func (db *DB) ListEntries(ctx context.Context) ([]Entry, error) {
	rows, err := db.reader.QueryContext(ctx, "SELECT "+entryColumns+" FROM entries ORDER BY created_at_us, id")
	if err != nil {
		return nil, fmt.Errorf("list entries: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, fmt.Errorf("list entries: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// DeleteEntry removes an entry; an unknown id yields ErrNotFound.
// Certificates already issued under it stay valid until they expire or are
// revoked, but can no longer renew: once DeleteEntry has returned, no
// issuance under way can still use the entry (it is ordered against
// issuances as revocations are, see IssueCheck).
func (db *DB) DeleteEntry(ctx context.Context, id string) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return fmt.Errorf("delete entry %s: %w", id, err)
	}
	defer tx.Rollback()
	if err := db.lockRevocation(ctx, tx); err != nil {
		return fmt.Errorf("delete entry %s: %w", id, err)
	}
	res, err := tx.ExecContext(ctx, db.q.rebind("DELETE FROM entries WHERE id = ?"), id)
	if err != nil {
		return fmt.Errorf("delete entry %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("entry %s: %w", id, ErrNotFound)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("delete entry %s: %w", id, err)
	}
	return nil
}
