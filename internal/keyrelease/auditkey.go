package keyrelease

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mutual-tls/mutual/internal/atomicfile"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/translog"
)

// Files of the audit log's signing key in the key directory.
const (
	AuditKeyFile      = "audit-key.pem"
	AuditVerifierFile = "audit-verifier.txt"
)

// AuditOrigin is the audit log's name for a trust domain: the first line
// of its checkpoints.
func AuditOrigin(td string) string { return td + "/mutual/keys-audit" }

// AuditSigner reads the audit log's Ed25519 key from the key directory
// (encrypted like the KEKs), making it and its verifier key file on first
// use.
func (f FileKeys) AuditSigner(trustDomain string) (*translog.Signer, error) {
	path := filepath.Join(f.Dir, AuditKeyFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(nil)
		if err != nil {
			return nil, err
		}
		if data, err = pki.MarshalPrivateKey(priv, f.Passphrase, f.Iterations); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(f.Dir, 0o700); err != nil {
			return nil, err
		}
		if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	key, err := pki.ParsePrivateKey(data, f.Passphrase)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: the audit log key must be Ed25519", path)
	}
	s, err := translog.NewSigner(AuditOrigin(trustDomain), priv)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(f.Dir, AuditVerifierFile), []byte(s.Verifier+"\n"), 0o644); err != nil {
		return nil, err
	}
	return s, nil
}
