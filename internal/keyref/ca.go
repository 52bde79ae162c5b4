package keyref

import (
	"context"
	"crypto"
	"fmt"

	"github.com/mutual-tls/mutual/internal/pki"
)

// NewCAKey returns a pki.InitOptions.NewKey that makes each CA key whose
// role refs names inside that token (Generate), and leaves a role refs does
// not name to pki's encrypted file. Every reference given is parsed first,
// so a bad one fails before any key is made.
func (k *Keyring) NewCAKey(refs pki.KeyRefs) (func(ctx context.Context, role string, t pki.KeyType) (crypto.Signer, string, error), error) {
	parsed := map[string]Ref{}
	for role, s := range map[string]string{pki.RoleRoot: refs.Root, pki.RoleIntermediate: refs.Intermediate} {
		if s == "" {
			continue
		}
		r, err := Parse(s)
		if err != nil {
			return nil, fmt.Errorf("the %s key: %w", role, err)
		}
		if _, ok := r.PKCS11(); !ok {
			return nil, fmt.Errorf("the %s key %s: %w; name a pkcs11: URI, or leave it out for an encrypted file in the CA directory", role, s, ErrNotInToken)
		}
		parsed[role] = r
	}
	if refs.Root != "" && refs.Root == refs.Intermediate {
		return nil, fmt.Errorf("the root and intermediate keys are both %s: give each its own object= label", refs.Root)
	}
	return func(ctx context.Context, role string, t pki.KeyType) (crypto.Signer, string, error) {
		r, ok := parsed[role]
		if !ok {
			return nil, "", nil
		}
		key, err := k.Generate(ctx, r, t)
		if err != nil {
			return nil, "", err
		}
		return key, r.String(), nil
	}, nil
}
