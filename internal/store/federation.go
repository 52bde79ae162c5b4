package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"
)

// ErrStaleBundle is SetBundle's refusal of a bundle whose sequence number
// is lower than the one held (a rollback), or equal to it with other keys.
var ErrStaleBundle = errors.New("bundle sequence number not newer than the one held")

// Federation is a relationship with a foreign trust domain: where and how
// this CA fetches its bundle.
type Federation struct {
	// TrustDomain is the foreign trust domain's name ("partner.example").
	TrustDomain string
	// EndpointURL is its SPIFFE bundle endpoint (https://...).
	EndpointURL string
	// Profile is "https_web" or "https_spiffe".
	Profile string
	// EndpointSPIFFEID is the bundle endpoint's SPIFFE ID (https_spiffe).
	EndpointSPIFFEID string
	// WebRootsPEM are the roots the endpoint's certificate must chain to
	// under https_web; empty means the system's.
	WebRootsPEM string
	CreatedAt   time.Time
	CreatedBy   string
	// LastAttempt and LastError are the time and outcome ("" for success)
	// of the last fetch.
	LastAttempt time.Time
	LastError   string
}

// TrustBundle is a trust domain's set of X.509 authorities as this CA
// holds it: its own, or the last good one fetched from a federated domain.
type TrustBundle struct {
	TrustDomain string
	// Sequence is the bundle's spiffe_sequence.
	Sequence int64
	// RefreshHint is the bundle's spiffe_refresh_hint; zero when absent.
	RefreshHint time.Duration
	// X509AuthoritiesPEM are the authorities, PEM certificates.
	X509AuthoritiesPEM string
	// JWTAuthorities are the JWT authorities (jwt-svid keys) as a JWKS
	// document; empty when the trust domain publishes none.
	JWTAuthorities string
	// Fingerprints name the authorities (the X.509 ones by SHA-256, hex,
	// and the JWT ones as federation.ToStore names them), as the change
	// records do.
	Fingerprints []string
	UpdatedAt    time.Time
	UpdatedBy    string
}

// BundleChange is one record of the federation audit trail.
type BundleChange struct {
	ID          int64
	TrustDomain string
	At          time.Time
	By          string
	// Action is "federation added", "bundle updated" or "federation removed".
	Action string
	// Sequence is the bundle's sequence after the change.
	Sequence int64
	// Added and Removed are fingerprints of the authorities that came and went.
	Added, Removed []string
}

// Actions recorded in BundleChange.Action.
const (
	ActionFederationAdded   = "federation added"
	ActionBundleUpdated     = "bundle updated"
	ActionFederationRemoved = "federation removed"
)

const (
	federationColumns = "trust_domain, endpoint_url, profile, endpoint_spiffe_id, web_roots_pem, created_at_us, created_by, last_attempt_us, last_error"
	bundleColumns     = "trust_domain, sequence, refresh_hint_us, x509_authorities, fingerprints, updated_at_us, updated_by, jwt_authorities"
	changeColumns     = "id, trust_domain, at_us, by_whom, action, sequence, added, removed"
)

func scanFederation(s scanner) (Federation, error) {
	var f Federation
	var created, attempt int64
	err := s.Scan(&f.TrustDomain, &f.EndpointURL, &f.Profile, &f.EndpointSPIFFEID, &f.WebRootsPEM, &created, &f.CreatedBy, &attempt, &f.LastError)
	f.CreatedAt, f.LastAttempt = fromUS(created), fromUS(attempt)
	if attempt == 0 {
		f.LastAttempt = time.Time{}
	}
	return f, err
}

func scanBundle(s scanner) (TrustBundle, error) {
	var b TrustBundle
	var hint, updated int64
	var fps string
	err := s.Scan(&b.TrustDomain, &b.Sequence, &hint, &b.X509AuthoritiesPEM, &fps, &updated, &b.UpdatedBy, &b.JWTAuthorities)
	b.RefreshHint = time.Duration(hint) * time.Microsecond
	b.Fingerprints, b.UpdatedAt = parseList(fps), fromUS(updated)
	return b, err
}

// lockFederation orders bundle and federation writes across PostgreSQL
// replicas; SQLite's single writer already does.
func (db *DB) lockFederation(ctx context.Context, tx *sql.Tx) error {
	if db.kind != "postgres" {
		return nil
	}
	_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(7105294006)")
	return err
}

// CreateFederation stores a relationship and, when initial is not nil, the
// foreign domain's first bundle (exchanged out of band), recording the
// change, in one transaction. An existing relationship yields
// ErrAlreadyExists.
func (db *DB) CreateFederation(ctx context.Context, f Federation, initial *TrustBundle) error {
	return db.inFederationTx(ctx, "add federation "+f.TrustDomain, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, db.q.rebind("INSERT INTO federations ("+federationColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, 0, '')"),
			f.TrustDomain, f.EndpointURL, f.Profile, f.EndpointSPIFFEID, f.WebRootsPEM, toUS(f.CreatedAt), f.CreatedBy)
		if err != nil {
			if isUniqueViolation(err) {
				return fmt.Errorf("federation with %s: %w", f.TrustDomain, ErrAlreadyExists)
			}
			return err
		}
		c := BundleChange{TrustDomain: f.TrustDomain, At: f.CreatedAt, By: f.CreatedBy, Action: ActionFederationAdded}
		if initial != nil {
			// A bundle left from an earlier relationship is replaced.
			if _, err := tx.ExecContext(ctx, db.q.rebind("DELETE FROM trust_bundles WHERE trust_domain = ?"), f.TrustDomain); err != nil {
				return err
			}
			if err := db.writeBundle(ctx, tx, *initial, false); err != nil {
				return err
			}
			c.Sequence, c.Added = initial.Sequence, initial.Fingerprints
		}
		return db.recordChange(ctx, tx, c)
	})
}

// inFederationTx runs f in a write transaction under the federation lock.
func (db *DB) inFederationTx(ctx context.Context, what string, f func(tx *sql.Tx) error) error {
	tx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer tx.Rollback()
	if err := db.lockFederation(ctx, tx); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := f(tx); err != nil {
		if errors.Is(err, ErrAlreadyExists) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrStaleBundle) {
			return err
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func (db *DB) writeBundle(ctx context.Context, tx *sql.Tx, b TrustBundle, update bool) error {
	q := "INSERT INTO trust_bundles (" + bundleColumns + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
	args := []any{b.TrustDomain, b.Sequence, b.RefreshHint.Microseconds(), b.X509AuthoritiesPEM, jsonList(b.Fingerprints), toUS(b.UpdatedAt), b.UpdatedBy, b.JWTAuthorities}
	if update {
		q = "UPDATE trust_bundles SET sequence = ?, refresh_hint_us = ?, x509_authorities = ?, fingerprints = ?, updated_at_us = ?, updated_by = ?, jwt_authorities = ? WHERE trust_domain = ?"
		args = append(args[1:], b.TrustDomain)
	}
	_, err := tx.ExecContext(ctx, db.q.rebind(q), args...)
	return err
}

func (db *DB) recordChange(ctx context.Context, tx *sql.Tx, c BundleChange) error {
	_, err := tx.ExecContext(ctx, db.q.rebind("INSERT INTO bundle_changes (trust_domain, at_us, by_whom, action, sequence, added, removed) VALUES (?, ?, ?, ?, ?, ?, ?)"),
		c.TrustDomain, toUS(c.At), c.By, c.Action, c.Sequence, jsonList(c.Added), jsonList(c.Removed))
	return err
}

// ListFederations returns every relationship, by trust domain.
func (db *DB) ListFederations(ctx context.Context) ([]Federation, error) {
	rows, err := db.reader.QueryContext(ctx, "SELECT "+federationColumns+" FROM federations ORDER BY trust_domain")
	if err != nil {
		return nil, fmt.Errorf("list federations: %w", err)
	}
	defer rows.Close()
	var out []Federation
	for rows.Next() {
		f, err := scanFederation(rows)
		if err != nil {
			return nil, fmt.Errorf("list federations: %w", err)
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// DeleteFederation removes a relationship and its bundle, recording who
// did it and which keys went; an unknown one yields ErrNotFound.
func (db *DB) DeleteFederation(ctx context.Context, trustDomain, by string, at time.Time) error {
	return db.inFederationTx(ctx, "remove federation "+trustDomain, func(tx *sql.Tx) error {
		found, err := db.dropFederation(ctx, tx, trustDomain, by, at)
		if err == nil && !found {
			err = fmt.Errorf("federation with %s: %w", trustDomain, ErrNotFound)
		}
		return err
	})
}

// dropFederation is DeleteFederation inside tx; it reports whether there
// was a relationship.
func (db *DB) dropFederation(ctx context.Context, tx *sql.Tx, trustDomain, by string, at time.Time) (bool, error) {
	res, err := tx.ExecContext(ctx, db.q.rebind("DELETE FROM federations WHERE trust_domain = ?"), trustDomain)
	if err != nil {
		return false, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return false, nil
	}
	c := BundleChange{TrustDomain: trustDomain, At: at, By: by, Action: ActionFederationRemoved}
	old, err := scanBundle(tx.QueryRowContext(ctx, db.q.rebind("SELECT "+bundleColumns+" FROM trust_bundles WHERE trust_domain = ?"), trustDomain))
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return false, err
	default:
		c.Sequence, c.Removed = old.Sequence, old.Fingerprints
	}
	if _, err := tx.ExecContext(ctx, db.q.rebind("DELETE FROM trust_bundles WHERE trust_domain = ?"), trustDomain); err != nil {
		return false, err
	}
	return true, db.recordChange(ctx, tx, c)
}

// RecordFederationAttempt notes the time and outcome ("" for success) of a
// fetch of trustDomain's bundle.
func (db *DB) RecordFederationAttempt(ctx context.Context, trustDomain string, at time.Time, errMsg string) error {
	_, err := db.writer.ExecContext(ctx, db.q.rebind("UPDATE federations SET last_attempt_us = ?, last_error = ? WHERE trust_domain = ?"),
		toUS(at), errMsg, trustDomain)
	if err != nil {
		return fmt.Errorf("record the fetch of %s's bundle: %w", trustDomain, err)
	}
	return nil
}

// GetBundle returns the bundle held for trustDomain, or ErrNotFound.
func (db *DB) GetBundle(ctx context.Context, trustDomain string) (TrustBundle, error) {
	b, err := scanBundle(db.reader.QueryRowContext(ctx, db.q.rebind("SELECT "+bundleColumns+" FROM trust_bundles WHERE trust_domain = ?"), trustDomain))
	if errors.Is(err, sql.ErrNoRows) {
		return b, fmt.Errorf("bundle of %s: %w", trustDomain, ErrNotFound)
	}
	if err != nil {
		return b, fmt.Errorf("read the bundle of %s: %w", trustDomain, err)
	}
	return b, nil
}

// ListBundles returns every bundle held, by trust domain.
func (db *DB) ListBundles(ctx context.Context) ([]TrustBundle, error) {
	rows, err := db.reader.QueryContext(ctx, "SELECT "+bundleColumns+" FROM trust_bundles ORDER BY trust_domain")
	if err != nil {
		return nil, fmt.Errorf("list bundles: %w", err)
	}
	defer rows.Close()
	var out []TrustBundle
	for rows.Next() {
		b, err := scanBundle(rows)
		if err != nil {
			return nil, fmt.Errorf("list bundles: %w", err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// SetBundle stores b as the bundle of its trust domain unless it is the one
// held already (then it reports false and writes nothing), and records the
// change (by b.UpdatedBy, at b.UpdatedAt, the keys that came and went). A
// sequence number lower than the one held, or equal to it with other keys,
// yields ErrStaleBundle: a rollback is never stored. Replicas setting the
// same bundle at once record one change.
func (db *DB) SetBundle(ctx context.Context, b TrustBundle) (changed bool, err error) {
	err = db.inFederationTx(ctx, "store the bundle of "+b.TrustDomain, func(tx *sql.Tx) error {
		old, err := scanBundle(tx.QueryRowContext(ctx, db.q.rebind("SELECT "+bundleColumns+" FROM trust_bundles WHERE trust_domain = ?"), b.TrustDomain))
		found := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		sameKeys := found && slices.Equal(sorted(old.Fingerprints), sorted(b.Fingerprints))
		switch {
		case found && b.Sequence < old.Sequence:
			return fmt.Errorf("bundle of %s: sequence %d is older than the %d held (a rollback): %w", b.TrustDomain, b.Sequence, old.Sequence, ErrStaleBundle)
		case found && b.Sequence == old.Sequence && sameKeys:
			if b.RefreshHint != old.RefreshHint {
				_, err := tx.ExecContext(ctx, db.q.rebind("UPDATE trust_bundles SET refresh_hint_us = ? WHERE trust_domain = ?"), b.RefreshHint.Microseconds(), b.TrustDomain)
				return err
			}
			return nil
		case found && b.Sequence == old.Sequence && old.Sequence != 0:
			return fmt.Errorf("bundle of %s: other keys under the same sequence %d: %w", b.TrustDomain, b.Sequence, ErrStaleBundle)
		}
		if err := db.writeBundle(ctx, tx, b, found); err != nil {
			return err
		}
		changed = true
		c := BundleChange{TrustDomain: b.TrustDomain, At: b.UpdatedAt, By: b.UpdatedBy, Action: ActionBundleUpdated, Sequence: b.Sequence,
			Added: minus(b.Fingerprints, old.Fingerprints), Removed: minus(old.Fingerprints, b.Fingerprints)}
		return db.recordChange(ctx, tx, c)
	})
	return changed, err
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// minus is what a holds that b does not.
func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// ListBundleChanges returns the federation audit trail, oldest first, for
// one trust domain or ("") all of them.
func (db *DB) ListBundleChanges(ctx context.Context, trustDomain string) ([]BundleChange, error) {
	q, args := "SELECT "+changeColumns+" FROM bundle_changes ORDER BY id", []any{}
	if trustDomain != "" {
		q, args = "SELECT "+changeColumns+" FROM bundle_changes WHERE trust_domain = ? ORDER BY id", []any{trustDomain}
	}
	rows, err := db.reader.QueryContext(ctx, db.q.rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("list bundle changes: %w", err)
	}
	defer rows.Close()
	var out []BundleChange
	for rows.Next() {
		var c BundleChange
		var at int64
		var added, removed string
		if err := rows.Scan(&c.ID, &c.TrustDomain, &at, &c.By, &c.Action, &c.Sequence, &added, &removed); err != nil {
			return nil, fmt.Errorf("list bundle changes: %w", err)
		}
		c.At, c.Added, c.Removed = fromUS(at), parseList(added), parseList(removed)
		out = append(out, c)
	}
	return out, rows.Err()
}
