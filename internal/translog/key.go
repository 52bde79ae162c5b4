package translog

import (
	"crypto"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/mutual-tls/mutual/internal/atomicfile"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/translog/logkey"
)

// Signer signs checkpoints with an Ed25519 key (x/mod/sumdb/note): a
// private key in memory, or one in a PKCS#11 token (keyref).
type Signer struct {
	name string
	hash uint32
	key  crypto.Signer
	// Verifier is the note verifier key line: NAME+HASH+KEY.
	Verifier string
}

// Name implements note.Signer.
func (s *Signer) Name() string { return s.name }

// KeyHash implements note.Signer.
func (s *Signer) KeyHash() uint32 { return s.hash }

// Sign implements note.Signer.
func (s *Signer) Sign(msg []byte) ([]byte, error) { return s.key.Sign(nil, msg, crypto.Hash(0)) }

// NewSigner makes a signer named name (the log's origin) from key, an
// Ed25519 key (ed25519.PrivateKey, or a token's signer).
func NewSigner(name string, key crypto.Signer) (*Signer, error) {
	pub, ok := key.Public().(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w, not %s", ErrNotEd25519, pki.KeyDescription(key.Public()))
	}
	vkey, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		return nil, err
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, err
	}
	return &Signer{name: name, hash: v.KeyHash(), key: key, Verifier: vkey}, nil
}

// Errors of LoadOrCreateKey about a log key that is there but unusable.
var (
	// ErrNotEd25519 means the log key file holds a key of another kind.
	ErrNotEd25519 = errors.New("the log key must be Ed25519")
	// ErrVerifierMismatch means the verifier file is not the key's.
	ErrVerifierMismatch = errors.New("the log's verifier key does not match its signing key")
)

// LoadOrCreateKey reads the log key of the CA in dir (logkey.KeyFile),
// creating it (encrypted with the passphrase, and its verifier key in
// logkey.VerifierFile) if the CA has none yet. A wrong passphrase gives
// an error wrapping pki.ErrWrongPassphrase.
func LoadOrCreateKey(dir, trustDomain string, passphrase []byte, iterations int) (*Signer, error) {
	path := filepath.Join(dir, logkey.KeyFile)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return createKey(dir, trustDomain, passphrase, iterations)
	case err != nil:
		return nil, err
	}
	key, err := pki.ParsePrivateKey(data, passphrase)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: %w, not %s", path, ErrNotEd25519, pki.KeyDescription(key.Public()))
	}
	s, err := NewSigner(logkey.Origin(trustDomain), priv)
	if err != nil {
		return nil, err
	}
	vpath := filepath.Join(dir, logkey.VerifierFile)
	if pub, err := os.ReadFile(vpath); err == nil && strings.TrimSpace(string(pub)) != s.Verifier {
		return nil, fmt.Errorf("%s does not match %s: %w; restore the log key or the verifier key", vpath, path, ErrVerifierMismatch)
	}
	return s, nil
}

// createKey makes the log key of a CA that has none and writes its files.
func createKey(dir, trustDomain string, passphrase []byte, iterations int) (*Signer, error) {
	k, err := logkey.Generate(nil, trustDomain, func(k crypto.Signer) ([]byte, error) {
		return pki.MarshalPrivateKey(k, passphrase, iterations)
	})
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, logkey.KeyFile)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(path, k.PEM, 0o600); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, logkey.VerifierFile), []byte(k.Verifier+"\n"), 0o644); err != nil {
		return nil, err
	}
	return NewSigner(logkey.Origin(trustDomain), k.Private)
}
