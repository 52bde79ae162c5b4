//go:build !cgo

package keyref

import (
	"crypto"

	"github.com/mutual-tls/mutual/internal/pki"
)

// pkcs11Built says this build cannot open PKCS#11 tokens.
const pkcs11Built = false

// token stands in for a PKCS#11 token in a build without cgo: it cannot be
// opened.
type token struct{}

func openToken(u PKCS11URI, pin string, maxSessions int) (*token, error) {
	return nil, ErrNeedsCgo
}

func (t *token) find(u PKCS11URI) (crypto.Signer, error) { return nil, ErrNeedsCgo }

func (t *token) generate(u PKCS11URI, kt pki.KeyType) (crypto.Signer, error) {
	return nil, ErrNeedsCgo
}

func (t *token) close() error { return nil }
