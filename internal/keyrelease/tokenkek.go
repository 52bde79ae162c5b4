package keyrelease

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // OAEP's hash, the one PKCS#11 tokens all support; not a signature
	"errors"
	"fmt"
	"io"

	"github.com/mutual-tls/mutual/internal/keyref"
	"github.com/mutual-tls/mutual/internal/pki"
)

// tokenKEK is a KEK on an RSA key in a PKCS#11 token. Tokens differ in the
// OAEP parameters they take (SoftHSM2 2.6 decrypts only OAEP with SHA-1 and
// no label), so it asks for the one all of them support and binds the label
// outside the token: RSA-OAEP-SHA-1 (MGF1-SHA-1, no label) wraps a fresh
// 256-bit key, which seals the data key with AES-256-GCM, the label as
// associated data. Only the RSA decryption happens in the token; the fresh
// key is used once, so its nonce is fixed.
type tokenKEK struct {
	id  string
	pub *rsa.PublicKey
	d   crypto.Decrypter
}

// tokenKEKPrefix starts the id of a token KEK, naming its construction.
const tokenKEKPrefix = "rsa-oaep-sha1-gcm:"

// NewTokenKEK makes a KEK of an RSA key that decrypts inside a PKCS#11
// token (keyref.Keyring.OpenDecrypter), with the construction above: the
// private key never leaves the token.
func NewTokenKEK(d crypto.Decrypter) (KEK, error) {
	pub, id, err := rsaKEKID(d, tokenKEKPrefix)
	if err != nil {
		return nil, err
	}
	return &tokenKEK{id: id, pub: pub, d: d}, nil
}

func (k *tokenKEK) ID() string { return k.id }

func (k *tokenKEK) Wrap(_ context.Context, dataKey, label []byte) ([]byte, error) {
	key := make([]byte, 32)
	if _, err := io.ReadFull(rand.Reader, key); err != nil {
		return nil, err
	}
	wrappedKey, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, k.pub, key, nil)
	if err != nil {
		return nil, err
	}
	aead, err := onceGCM(key)
	if err != nil {
		return nil, err
	}
	return aead.Seal(wrappedKey, make([]byte, aead.NonceSize()), dataKey, label), nil
}

func (k *tokenKEK) Unwrap(_ context.Context, wrapped, label []byte) ([]byte, error) {
	n := k.pub.Size()
	if len(wrapped) <= n {
		return nil, errors.New("wrapped key too short for this key-encryption key")
	}
	key, err := k.d.Decrypt(rand.Reader, wrapped[:n], &rsa.OAEPOptions{Hash: crypto.SHA1})
	if err != nil {
		return nil, err
	}
	aead, err := onceGCM(key)
	if err != nil {
		return nil, err
	}
	return aead.Open(nil, make([]byte, aead.NonceSize()), wrapped[n:], label)
}

// onceGCM is AES-256-GCM under a key that seals one message only.
func onceGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("unwrapped a %d-byte key, want 32", len(key))
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// TokenKeys are key-encryption keys in PKCS#11 tokens, named by pkcs11:
// URIs: generated and used inside the token, never written to a file.
type TokenKeys struct {
	// Keyring opens the tokens; its owner closes it after the service.
	Keyring *keyref.Keyring
	// Refs name the keys, oldest first: the last one wraps, the others
	// still unwrap what they wrapped.
	Refs []string
}

// open opens every key in Refs.
func (t TokenKeys) open(ctx context.Context) ([]KEK, error) {
	var keys []KEK
	for _, ref := range t.Refs {
		d, err := t.Keyring.OpenDecrypter(ctx, ref)
		if err != nil {
			return nil, fmt.Errorf("key-encryption key: %w", err)
		}
		k, err := NewTokenKEK(d)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// Generate makes a new RSA key-encryption key inside the token ref names
// (its object= label must be new) and returns its id. It wraps once a key
// service is started with ref as its last token key.
func (t TokenKeys) Generate(ctx context.Context, ref string) (string, error) {
	r, err := keyref.Parse(ref)
	if err != nil {
		return "", err
	}
	if !r.InToken() {
		return "", fmt.Errorf("%s is not a pkcs11: URI: file key-encryption keys are made by rotate without --kek", r)
	}
	s, err := t.Keyring.Generate(ctx, r, pki.KeyRSA3072)
	if err != nil {
		return "", fmt.Errorf("key-encryption key: %w", err)
	}
	d, ok := s.(crypto.Decrypter)
	if !ok {
		return "", fmt.Errorf("%s: the new key cannot decrypt", r)
	}
	k, err := NewTokenKEK(d)
	if err != nil {
		return "", err
	}
	return k.ID(), nil
}

// LoadWith returns a keyring whose current key is the last of t's token
// keys, keeping every older token key and every file key already in the
// directory (made before the move to a token) to unwrap. Unlike Load, it
// never makes a file key. With no token keys it is Load.
func (f FileKeys) LoadWith(ctx context.Context, t TokenKeys) (*Keyring, error) {
	if len(t.Refs) == 0 {
		return f.Load()
	}
	names, err := f.names()
	if err != nil {
		return nil, err
	}
	older, err := f.loadAll(names)
	if err != nil {
		return nil, err
	}
	tokens, err := t.open(ctx)
	if err != nil {
		return nil, err
	}
	older = append(older, tokens[:len(tokens)-1]...)
	return NewKeyring(tokens[len(tokens)-1], older...), nil
}
