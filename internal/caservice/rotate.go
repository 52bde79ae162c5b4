package caservice

import (
	"context"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/keyref"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/translog"
)

// RotateOptions configures RotateIntermediate and RotateRoot.
type RotateOptions struct {
	// Dir is the CA directory (required).
	Dir string
	// Passphrase decrypts the root key file and encrypts a new key file.
	Passphrase []byte
	// StoreURL is the server's store; empty means sqlite:DIR/mutual.db.
	StoreURL string
	// NewKey, when set, is a pkcs11: URI naming a new object to make the
	// new key in; empty means an encrypted file.
	NewKey string
	// Iterations is the PBKDF2 work factor of a new key file; zero means
	// the default.
	Iterations int
}

// RotateIntermediate gives the CA in dir a new intermediate signed by its
// root (pki.RotateIntermediate: the root key, a file or a token key, must be
// reachable), and records the new intermediate's certificate in the store
// and the issuance log (requested by "ca-rotate-intermediate"), so that the
// log shows when issuance moved to it. A running service moves to it by
// itself (Service.Reload); the retired intermediate keeps answering CRL and
// OCSP until it expires.
func RotateIntermediate(ctx context.Context, o RotateOptions) (*pki.Rotation, error) {
	return rotate(ctx, o, pki.KeyRefs{Intermediate: o.NewKey}, "rotate-intermediate", func(ctx context.Context, po pki.RotateOptions) (*pki.Rotation, *x509.Certificate, error) {
		rot, err := pki.RotateIntermediate(ctx, po)
		if err != nil {
			return nil, nil, err
		}
		return rot, rot.New, nil
	})
}

// rotate runs one rotation step do with the keys ca.json names (newKeys
// says where to make the new key), the store open (a CA whose store is away
// is not rotated), then records the new certificate in the log, requested
// by "ca-"+what.
func rotate[R any](ctx context.Context, o RotateOptions, newKeys pki.KeyRefs, what string, do func(context.Context, pki.RotateOptions) (R, *x509.Certificate, error)) (R, error) {
	var none R
	if o.StoreURL == "" {
		o.StoreURL = defaultStoreURL(o.Dir)
	}
	cfg, td, err := pki.ReadConfig(o.Dir)
	if err != nil {
		return none, err
	}
	keys := keyref.NewKeyring(keyref.Options{Passphrase: o.Passphrase})
	defer keys.Close()
	newKey, err := keys.NewCAKey(newKeys)
	if err != nil {
		return none, err
	}
	db, err := openStore(ctx, o.Dir, o.StoreURL)
	if err != nil {
		return none, err
	}
	defer db.Close()
	res, cert, err := do(ctx, pki.RotateOptions{
		Dir: o.Dir, Passphrase: o.Passphrase, Keys: keys, NewKey: newKey, KeyType: cfg.KeyType, Iterations: o.Iterations,
	})
	if err != nil {
		return none, err
	}
	if err := recordCACert(ctx, db, td, cert, what); err != nil {
		return res, fmt.Errorf("%s done (new certificate %s) but not recorded in the issuance log: %w", what, pki.FormatSerial(cert.SerialNumber), err)
	}
	return res, nil
}

// recordCACert records one of the CA's own CA certificates (a new
// intermediate or root) in the store and the issuance log, requested by
// "ca-"+what, under the trust domain's ID: the log shows when it appeared.
func recordCACert(ctx context.Context, db *store.DB, td spiffeid.TrustDomain, c *x509.Certificate, what string) error {
	issued := c.NotBefore.Add(pki.ClockSkew)
	by := translog.CARequester(what)
	return db.RecordIssuance(ctx, &store.Certificate{
		Serial: pki.FormatSerial(c.SerialNumber), SPIFFEID: td.ID().String(), NotBefore: c.NotBefore,
		NotAfter: c.NotAfter, IssuedAt: issued, DER: c.Raw, RequestedBy: by.String(),
		LogEntry: translog.Entry{Certificate: c.Raw, RequestedBy: by, IssuedAt: issued.UTC()}.Marshal(),
	}, "", time.Now())
}

// RotateRoot introduces a new root for the CA in dir (pki.RotateRoot: the
// old root key must be reachable to cross-sign the new one) and records it
// in the store and the issuance log. o.NewKey names a token object for the
// new root key. Restart the service so that it serves the new bundle; then
// rotate the intermediate (it is signed by the new root), and withdraw the
// old root with WithdrawRoots once nothing valid chains to it.
func RotateRoot(ctx context.Context, o RotateOptions) (*pki.RootRotation, error) {
	return rotate(ctx, o, pki.KeyRefs{Root: o.NewKey}, "rotate-root", func(ctx context.Context, po pki.RotateOptions) (*pki.RootRotation, *x509.Certificate, error) {
		rot, err := pki.RotateRoot(ctx, po)
		if err != nil {
			return nil, nil, err
		}
		return rot, rot.New, nil
	})
}

// WithdrawRoots ends the overlap of a root rotation of the CA in dir
// (pki.WithdrawRoots). The operator identity in DIR/admin is reissued first
// when it still chains to an old root, so that it keeps working.
func WithdrawRoots(ctx context.Context, dir string, passphrase []byte, storeURL string, now time.Time) ([]*x509.Certificate, error) {
	root, err := pki.CheckWithdrawRoots(dir, now)
	if err != nil {
		return nil, err
	}
	admin, err := identity.Load(filepath.Join(dir, pki.AdminDir))
	if err != nil {
		return nil, err
	}
	if len(admin.Chain) < 2 || admin.Chain[1].CheckSignatureFrom(root) != nil {
		name := strings.TrimPrefix(admin.ID.Path(), "/admin/")
		id, err := IssueAdmin(ctx, dir, passphrase, storeURL, name, pki.DefaultAdminTTL)
		if err != nil {
			return nil, fmt.Errorf("reissue the operator identity under the new root: %w", err)
		}
		// Saved with the roots trusted until now; WithdrawRoots edits its bundle.
		if err := id.Save(filepath.Join(dir, pki.AdminDir)); err != nil {
			return nil, err
		}
	}
	return pki.WithdrawRoots(dir, now)
}
