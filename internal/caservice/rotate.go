package caservice

import (
	"context"
	"fmt"
	"time"

	"github.com/mutual-tls/mutual/internal/keyref"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/translog"
)

// RotateOptions configures RotateIntermediate.
type RotateOptions struct {
	// Dir is the CA directory (required).
	Dir string
	// Passphrase decrypts the root key file and encrypts a new intermediate
	// key file.
	Passphrase []byte
	// StoreURL is the server's store; empty means sqlite:DIR/mutual.db.
	StoreURL string
	// NewKey, when set, is a pkcs11: URI naming a new object to make the
	// new intermediate key in; empty means an encrypted file.
	NewKey string
	// Iterations is the PBKDF2 work factor of a new key file; zero means
	// the default.
	Iterations int
}

// RotateIntermediate gives the CA in dir a new intermediate signed by its
// root (pki.RotateIntermediate: the root key, a file or a token key, must be
// reachable), and records the new intermediate's certificate in the store
// and the issuance log (requested by "ca-rotate-intermediate"), so that the
// log shows when issuance moved to it. The running service moves to it at
// its next start; the retired intermediate keeps answering CRL and OCSP
// until it expires.
func RotateIntermediate(ctx context.Context, o RotateOptions) (*pki.Rotation, error) {
	if o.StoreURL == "" {
		o.StoreURL = defaultStoreURL(o.Dir)
	}
	cfg, td, err := pki.ReadConfig(o.Dir)
	if err != nil {
		return nil, err
	}
	keys := keyref.NewKeyring(keyref.Options{Passphrase: o.Passphrase})
	defer keys.Close()
	newKey, err := keys.NewCAKey(pki.KeyRefs{Intermediate: o.NewKey})
	if err != nil {
		return nil, err
	}
	// The store is opened first: a CA whose store is away is not rotated.
	db, err := openStore(ctx, o.Dir, o.StoreURL)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rot, err := pki.RotateIntermediate(ctx, pki.RotateOptions{
		Dir: o.Dir, Passphrase: o.Passphrase, Keys: keys, NewKey: newKey, KeyType: cfg.KeyType, Iterations: o.Iterations,
	})
	if err != nil {
		return nil, err
	}
	c := rot.New
	issued := c.NotBefore.Add(pki.ClockSkew)
	by := translog.CARequester("rotate-intermediate")
	err = db.RecordIssuance(ctx, &store.Certificate{
		Serial: pki.FormatSerial(c.SerialNumber), SPIFFEID: td.ID().String(), NotBefore: c.NotBefore,
		NotAfter: c.NotAfter, IssuedAt: issued, DER: c.Raw, RequestedBy: by.String(),
		LogEntry: translog.Entry{Certificate: c.Raw, RequestedBy: by, IssuedAt: issued.UTC()}.Marshal(),
	}, "", time.Now())
	if err != nil {
		return rot, fmt.Errorf("the intermediate was rotated (%s) but not recorded in the issuance log: %w", pki.FormatSerial(c.SerialNumber), err)
	}
	return rot, nil
}
