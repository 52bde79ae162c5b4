package store

import (
	"context"
	"fmt"
)

// CheckGrant verifies c.Check, as RecordIssuance does inside the issuing
// transaction, for a credential the CA signs but does not record (a
// JWT-SVID): ordered against revocations (on PostgreSQL under the shared
// revocation lock), so that once revoking an identity, its node or the
// presented certificate has answered success, CheckGrant refuses it.
// c.IssuedAt is when the request began; c.Serial and c.DER are not used.
func (db *DB) CheckGrant(ctx context.Context, c *Certificate) error {
	if c.Check == nil {
		return fmt.Errorf("check the grant of %s: no check given", c.SPIFFEID)
	}
	tx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("check the grant of %s: %w", c.SPIFFEID, err)
	}
	defer tx.Rollback()
	if err := db.lockAgainstRevocation(ctx, tx); err != nil {
		return err
	}
	return db.checkIssuance(ctx, tx, c)
}
