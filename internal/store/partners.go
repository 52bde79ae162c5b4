package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrPartnershipEnded is the refusal to end, or issue under, a partnership
// that has ended.
var ErrPartnershipEnded = errors.New("partnership ended")

// Partner is a partnership: another organisation's scoped, time-bound
// access through identities under spiffe://TD/partner/NAME/.
type Partner struct {
	Name string
	// TrustDomain is the partner's federated trust domain, or "".
	TrustDomain string
	// Roles are carried by every certificate issued under the partnership.
	Roles []string
	// Services and Requests are its scope, what inbound proxies let its
	// identities reach: SPIFFE ID patterns of services, and "METHODS PATH"
	// rules (none: every request to those services). No service: nothing.
	Services []string
	Requests []string
	// EndsAt is when the partnership ends by itself.
	EndsAt    time.Time
	CreatedAt time.Time
	CreatedBy string
	// EndedAt is zero while the partnership lasts.
	EndedAt time.Time
	EndedBy string
}

// Ended reports whether the partnership has been ended.
func (p *Partner) Ended() bool { return !p.EndedAt.IsZero() }

const partnerColumns = "name, trust_domain, roles, ends_at_us, created_at_us, created_by, ended_at_us, ended_by, services, requests"

func scanPartner(s scanner) (Partner, error) {
	var p Partner
	var roles, services, requests string
	var ends, created, ended int64
	err := s.Scan(&p.Name, &p.TrustDomain, &roles, &ends, &created, &p.CreatedBy, &ended, &p.EndedBy, &services, &requests)
	p.Roles, p.EndsAt, p.CreatedAt = parseList(roles), fromUS(ends), fromUS(created)
	p.Services, p.Requests = parseList(services), parseList(requests)
	if ended != 0 {
		p.EndedAt = fromUS(ended)
	}
	return p, err
}

// CreatePartner stores a partnership; an existing name (ended or not)
// yields ErrAlreadyExists.
func (db *DB) CreatePartner(ctx context.Context, p Partner) error {
	_, err := db.writer.ExecContext(ctx, db.q.rebind("INSERT INTO partners ("+partnerColumns+") VALUES (?, ?, ?, ?, ?, ?, 0, '', ?, ?)"),
		p.Name, p.TrustDomain, jsonList(p.Roles), toUS(p.EndsAt), toUS(p.CreatedAt), p.CreatedBy, jsonList(p.Services), jsonList(p.Requests))
	if err != nil {
		if isUniqueViolation(err) {
			return fmt.Errorf("partnership %s: %w", p.Name, ErrAlreadyExists)
		}
		return fmt.Errorf("store partnership %s: %w", p.Name, err)
	}
	return nil
}

// GetPartner returns the partnership name, or ErrNotFound.
func (db *DB) GetPartner(ctx context.Context, name string) (Partner, error) {
	p, err := scanPartner(db.reader.QueryRowContext(ctx, db.q.rebind("SELECT "+partnerColumns+" FROM partners WHERE name = ?"), name))
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("partnership %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return p, fmt.Errorf("read partnership %s: %w", name, err)
	}
	return p, nil
}

// ListPartners returns every partnership, ended ones included, by name.
func (db *DB) ListPartners(ctx context.Context) ([]Partner, error) {
	rows, err := db.reader.QueryContext(ctx, "SELECT "+partnerColumns+" FROM partners ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("list partnerships: %w", err)
	}
	defer rows.Close()
	var out []Partner
	for rows.Next() {
		p, err := scanPartner(rows)
		if err != nil {
			return nil, fmt.Errorf("list partnerships: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// likePrefix is a LIKE pattern (with ESCAPE '\') for strings starting with s.
func likePrefix(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s) + "%"
}

// EndPartner ends the partnership name in one transaction: it revokes every
// unexpired certificate whose SPIFFE ID starts with idPrefix
// ("spiffe://TD/partner/NAME/"), keeps those identities revoked (none of
// their certificates renews), voids the partnership's unused join tokens,
// and drops its federated trust domain's relationship and bundle (recorded
// as a bundle change). It returns the certificates revoked. An unknown
// partnership yields ErrNotFound, one already ended ErrPartnershipEnded.
func (db *DB) EndPartner(ctx context.Context, name, idPrefix, by string, reason int, at time.Time) ([]Revocation, error) {
	p, err := db.GetPartner(ctx, name)
	if err != nil {
		return nil, err
	}
	if p.Ended() {
		return nil, fmt.Errorf("partnership %s, at %s by %s: %w", name, p.EndedAt.Format(time.RFC3339), p.EndedBy, ErrPartnershipEnded)
	}
	like := likePrefix(idPrefix)
	state := func(tx *sql.Tx) error { return db.endPartnerState(ctx, tx, p, like, by, reason, at) }
	cond := `spiffe_id LIKE ? ESCAPE '\'`
	for range 3 {
		revs, err := db.revokeWhere(ctx, "no unexpired certificate of partnership "+name, cond, []any{like}, reason, at, false, state)
		if !errors.Is(err, ErrNotFound) {
			return revs, err
		}
		// Nothing to revoke: end it in a transaction of its own, unless a
		// certificate was issued under it meanwhile.
		done, err := db.endPartnerWithoutCertificates(ctx, cond, like, at, state)
		if err != nil || done {
			return nil, err
		}
	}
	return nil, fmt.Errorf("end partnership %s: certificates kept being issued under it; try again", name)
}

func (db *DB) endPartnerWithoutCertificates(ctx context.Context, cond, like string, at time.Time, state func(*sql.Tx) error) (bool, error) {
	tx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	if err := db.lockRevocation(ctx, tx); err != nil {
		return false, err
	}
	var n int64
	if err := tx.QueryRowContext(ctx, db.q.rebind("SELECT COUNT(*) FROM certificates WHERE ("+cond+") AND not_after_us > ?"), like, toUS(at)).Scan(&n); err != nil {
		return false, err
	}
	if n > 0 {
		return false, nil
	}
	if err := state(tx); err != nil {
		return false, err
	}
	return true, tx.Commit()
}

// endPartnerState is what EndPartner records besides the revocations,
// inside the revoking transaction.
func (db *DB) endPartnerState(ctx context.Context, tx *sql.Tx, p Partner, like, by string, reason int, at time.Time) error {
	res, err := tx.ExecContext(ctx, db.q.rebind("UPDATE partners SET ended_at_us = ?, ended_by = ? WHERE name = ? AND ended_at_us = 0"), toUS(at), by, p.Name)
	if err != nil {
		return fmt.Errorf("end partnership %s: %w", p.Name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("partnership %s: %w", p.Name, ErrPartnershipEnded)
	}
	// A token expired at its creation fails inside any issuing transaction.
	if _, err := tx.ExecContext(ctx, db.q.rebind(`UPDATE tokens SET expires_at_us = created_at_us
		WHERE spiffe_id LIKE ? ESCAPE '\' AND used_at_us IS NULL`), like); err != nil {
		return fmt.Errorf("end partnership %s: void its tokens: %w", p.Name, err)
	}
	rows, err := tx.QueryContext(ctx, db.q.rebind(`SELECT DISTINCT spiffe_id FROM certificates WHERE spiffe_id LIKE ? ESCAPE '\'`), like)
	if err != nil {
		return fmt.Errorf("end partnership %s: %w", p.Name, err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("end partnership %s: %w", p.Name, err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	for _, id := range ids {
		if err := db.recordRevokedState(ctx, tx, "revoked_identities", "spiffe_id", id, reason, at); err != nil {
			return err
		}
	}
	if p.TrustDomain == "" {
		return nil
	}
	if err := db.lockFederation(ctx, tx); err != nil {
		return fmt.Errorf("end partnership %s: %w", p.Name, err)
	}
	if _, err := db.dropFederation(ctx, tx, p.TrustDomain, by, at); err != nil {
		return fmt.Errorf("end partnership %s: drop the federation with %s: %w", p.Name, p.TrustDomain, err)
	}
	return nil
}

// CertificatesUnder returns the certificates whose SPIFFE ID starts with
// idPrefix (a partnership's), newest first, at most limit of them.
func (db *DB) CertificatesUnder(ctx context.Context, idPrefix string, limit int) ([]Certificate, error) {
	rows, err := db.reader.QueryContext(ctx, db.q.rebind(`SELECT `+certSelect+` FROM certificates WHERE spiffe_id LIKE ? ESCAPE '\'
		ORDER BY issued_at_us DESC, serial DESC LIMIT ?`), likePrefix(idPrefix), limit)
	if err != nil {
		return nil, fmt.Errorf("list certificates under %s: %w", idPrefix, err)
	}
	defer rows.Close()
	var out []Certificate
	for rows.Next() {
		c, err := scanCert(rows)
		if err != nil {
			return nil, fmt.Errorf("list certificates under %s: %w", idPrefix, err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
