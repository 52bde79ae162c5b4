package store

import (
	"context"
	"fmt"
	"time"
)

// JWTKey is a JWT authority key as the store keeps it.
type JWTKey struct {
	// ID is the key's kid.
	ID      string
	Created time.Time
	// PEM is the private key, PKCS#8 encrypted with the CA's passphrase.
	PEM []byte
}

// ListJWTKeys returns the JWT authority keys, oldest first.
func (db *DB) ListJWTKeys(ctx context.Context) ([]JWTKey, error) {
	rows, err := db.writer.QueryContext(ctx, "SELECT kid, created_at_us, key_pem FROM jwt_keys ORDER BY created_at_us, kid")
	if err != nil {
		return nil, fmt.Errorf("list the JWT authority keys: %w", err)
	}
	defer rows.Close()
	var out []JWTKey
	for rows.Next() {
		var k JWTKey
		var us int64
		if err := rows.Scan(&k.ID, &us, &k.PEM); err != nil {
			return nil, fmt.Errorf("list the JWT authority keys: %w", err)
		}
		k.Created = fromUS(us)
		out = append(out, k)
	}
	return out, rows.Err()
}

// AddJWTKey adds k unless a key made after notBefore is there
// already (another replica rotated first), and reports whether it did.
func (db *DB) AddJWTKey(ctx context.Context, k JWTKey, notBefore time.Time) (bool, error) {
	tx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("add a JWT authority key: %w", err)
	}
	defer tx.Rollback()
	if db.kind == "postgres" {
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(7105294006)"); err != nil {
			return false, fmt.Errorf("add a JWT authority key: %w", err)
		}
	}
	var n int
	if err := tx.QueryRowContext(ctx, db.q.rebind("SELECT COUNT(*) FROM jwt_keys WHERE created_at_us > ?"), toUS(notBefore)).Scan(&n); err != nil {
		return false, fmt.Errorf("add a JWT authority key: %w", err)
	}
	if n > 0 {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, db.q.rebind("INSERT INTO jwt_keys (kid, created_at_us, key_pem) VALUES (?, ?, ?)"), k.ID, toUS(k.Created), k.PEM); err != nil {
		return false, fmt.Errorf("add the JWT authority key %s: %w", k.ID, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("add the JWT authority key %s: %w", k.ID, err)
	}
	return true, nil
}

// DeleteJWTKey removes the JWT authority key kid (retired).
func (db *DB) DeleteJWTKey(ctx context.Context, kid string) error {
	if _, err := db.writer.ExecContext(ctx, db.q.rebind("DELETE FROM jwt_keys WHERE kid = ?"), kid); err != nil {
		return fmt.Errorf("delete the JWT authority key %s: %w", kid, err)
	}
	return nil
}
