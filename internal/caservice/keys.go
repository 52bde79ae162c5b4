package caservice

import (
	"context"

	"github.com/mutual-tls/mutual/internal/keyref"
	"github.com/mutual-tls/mutual/internal/pki"
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
