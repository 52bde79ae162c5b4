package caservice

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/keyref"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/revocation/publish"
	"github.com/mutual-tls/mutual/internal/store"
)

// loadCA loads the CA in dir with a Keyring that opens the keys ca.json
// names (a PKCS#11 token's, or encrypted files). The caller closes the
// Keyring once it no longer signs: token keys stop working then.
func loadCA(ctx context.Context, dir string, passphrase []byte) (*pki.CA, *keyref.Keyring, error) {
	keys := keyref.NewKeyring(keyref.Options{Passphrase: passphrase})
	c, err := pki.LoadCAWith(ctx, dir, passphrase, keys)
	if err != nil {
		keys.Close()
		return nil, nil, err
	}
	return c, keys, nil
}

// retiredCRLs are the CRLs of the intermediates a rotation retired, each
// signed by its own key.
func retiredCRLs(c *pki.CA, db *store.DB) []*publish.CRL {
	var out []*publish.CRL
	for _, is := range c.Retired {
		out = append(out, &publish.CRL{Issuer: is, Store: db})
	}
	return out
}

// signedByCurrent says whether cert was issued by the current intermediate.
func (s *Service) signedByCurrent(cert *x509.Certificate) bool {
	return cert.CheckSignatureFrom(s.caDir.Issuer.Cert) == nil
}

// reissueAfterRotation reissues the service's own TLS certificate under
// the current intermediate when a rotation left it under a retired one, so
// that the service serves a chain of the intermediate it issues with.
func (s *Service) reissueAfterRotation(ctx context.Context) error {
	dir := filepath.Join(s.Dir, pki.ServerDir)
	id, err := identity.Load(dir)
	if err != nil || s.signedByCurrent(id.Leaf()) {
		return nil // loadServerCert reports a missing identity
	}
	_, err = s.renewServerCert(ctx, dir, id, time.Now())
	return err
}

// rotationChains gives a the intermediates a rotation retired and, during
// a root rotation, the cross-signed copy of the issuing intermediate
// (pki.CrossSignedFile) that every chain it hands out carries.
func rotationChains(a *ca.Authority, c *pki.CA) error {
	for _, is := range c.Retired {
		a.Retired = append(a.Retired, is.Cert)
	}
	cross, err := pki.ReadCertificates(filepath.Join(c.Dir, pki.CrossSignedFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("the cross-signed intermediate of the root rotation in progress: %w", err)
	}
	a.CrossSigned = cross
	return nil
}
