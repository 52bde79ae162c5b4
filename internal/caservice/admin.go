package caservice

import (
	"context"
	"fmt"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/translog"
)

// IssueAdmin issues an operator identity spiffe://TD/admin/NAME with the
// intermediate key of the CA in dir and records it in the CA's store
// (storeURL, or the default SQLite file), so that it authenticates and can
// be revoked like any other certificate. It runs offline, beside or instead
// of a running service: the store is checked against the CA's log as Open
// checks it.
func IssueAdmin(ctx context.Context, dir string, passphrase []byte, storeURL, name string, ttl time.Duration) (*identity.Identity, error) {
	c, keys, err := loadCA(ctx, dir, passphrase)
	if err != nil {
		return nil, err
	}
	defer keys.Close()
	id, err := pki.AdminID(c.TrustDomain, name)
	if err != nil {
		return nil, fmt.Errorf("--name %q: %w", name, err)
	}
	if storeURL == "" {
		storeURL = defaultStoreURL(dir)
	}
	db, err := openStore(ctx, dir, storeURL)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	key, err := pki.GenerateKey(c.Config.KeyType, nil)
	if err != nil {
		return nil, err
	}
	cert, err := c.Issuer.Issue(pki.Leaf{ID: id, PublicKey: key.Public(), TTL: ttl, Now: time.Now()})
	if err != nil {
		return nil, err
	}
	a := &ca.Authority{Issuer: c.Issuer, Roots: c.Roots, Store: db}
	if err := rotationChains(a, c); err != nil {
		return nil, err
	}
	if err := a.Import(ctx, cert, translog.CARequester("admin")); err != nil {
		return nil, err
	}
	return &identity.Identity{ID: id, Chain: a.ChainOf(cert), Key: key, Roots: c.Roots}, nil
}
