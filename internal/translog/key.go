package translog

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/mutual-tls/mutual/internal/atomicfile"
	"github.com/mutual-tls/mutual/internal/pki"
)

// Files of the log's key in a CA directory: its own key, not the CA's.
const (
	KeyFile      = pki.LogKeyFile
	VerifierFile = pki.LogVerifierFile
)

// Signer signs checkpoints with an Ed25519 key (x/mod/sumdb/note).
type Signer struct {
	name string
	hash uint32
	key  ed25519.PrivateKey
	// Verifier is the note verifier key line: NAME+HASH+KEY.
	Verifier string
}

// Name implements note.Signer.
func (s *Signer) Name() string { return s.name }

// KeyHash implements note.Signer.
func (s *Signer) KeyHash() uint32 { return s.hash }

// Sign implements note.Signer.
func (s *Signer) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(s.key, msg), nil }

// NewSigner makes a signer named name (the log's origin) from key.
func NewSigner(name string, key ed25519.PrivateKey) (*Signer, error) {
	vkey, err := note.NewEd25519VerifierKey(name, key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, err
	}
	return &Signer{name: name, hash: v.KeyHash(), key: key, Verifier: vkey}, nil
}

// Origin is the log's name for a trust domain: the first line of every
// checkpoint and the name of its key.
func Origin(trustDomain string) string { return pki.LogOrigin(trustDomain) }

// LoadOrCreateKey reads the log key of the CA in dir, creating it (encrypted
// with the passphrase, and its verifier key beside the bundle) if the CA
// has none yet.
func LoadOrCreateKey(dir, trustDomain string, passphrase []byte, iterations int) (*Signer, error) {
	path := filepath.Join(dir, KeyFile)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		_, priv, err := ed25519.GenerateKey(nil)
		if err != nil {
			return nil, err
		}
		pemKey, err := pki.MarshalPrivateKey(priv, passphrase, iterations)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		if err := atomicfile.WriteFile(path, pemKey, 0o600); err != nil {
			return nil, err
		}
		s, err := NewSigner(Origin(trustDomain), priv)
		if err != nil {
			return nil, err
		}
		if err := atomicfile.WriteFile(filepath.Join(dir, VerifierFile), []byte(s.Verifier+"\n"), 0o644); err != nil {
			return nil, err
		}
		return s, nil
	case err != nil:
		return nil, err
	}
	key, err := pki.ParsePrivateKey(data, passphrase)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: the log key must be Ed25519", path)
	}
	s, err := NewSigner(Origin(trustDomain), priv)
	if err != nil {
		return nil, err
	}
	if pub, err := os.ReadFile(filepath.Join(dir, VerifierFile)); err == nil && strings.TrimSpace(string(pub)) != s.Verifier {
		return nil, fmt.Errorf("%s does not match %s: restore the log key or the verifier key", filepath.Join(dir, VerifierFile), path)
	}
	return s, nil
}
