package caservice

import (
	"context"
	"crypto/x509"
	"path/filepath"
	"time"

	"github.com/mutual-tls/mutual/identity"
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
