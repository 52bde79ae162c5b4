// Package token encodes and parses join tokens: one copy-paste string that
// carries the CA's addresses, the SHA-256 fingerprint of its root
// certificate, and a single-use secret.
//
// The wire form is "mutual1." followed by unpadded base64url JSON:
//
//	{"ca":["https://ca.example:8443"],"fp":"<64 hex>","id":"<16 hex>","s":"<43 base64url>"}
//
// The CA stores only the SHA-256 of the secret, indexed by the public id.
package token

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
)

// Prefix starts every join token of this format version.
const Prefix = "mutual1."

// SecretSize is the number of random bytes in a token's secret.
const SecretSize = 32

// Token is a parsed join token.
type Token struct {
	// CAURLs are the CA service's base URLs (https), in order of preference.
	CAURLs []string
	// RootFingerprint is the SHA-256 of the root certificate's DER.
	RootFingerprint [32]byte
	// ID is the token's public identifier (16 hex digits).
	ID string
	// Secret is the single-use secret; only its hash is stored by the CA.
	Secret [SecretSize]byte
}

type wire struct {
	CA []string `json:"ca"`
	FP string   `json:"fp"`
	ID string   `json:"id"`
	S  string   `json:"s"`
}

// New makes a token with a fresh id and secret from r (crypto/rand when nil).
func New(r io.Reader, caURLs []string, rootFingerprint [32]byte) (*Token, error) {
	if r == nil {
		r = rand.Reader
	}
	t := &Token{CAURLs: caURLs, RootFingerprint: rootFingerprint}
	var id [8]byte
	if _, err := io.ReadFull(r, id[:]); err != nil {
		return nil, fmt.Errorf("token id: %w", err)
	}
	t.ID = hex.EncodeToString(id[:])
	if _, err := io.ReadFull(r, t.Secret[:]); err != nil {
		return nil, fmt.Errorf("token secret: %w", err)
	}
	return t, nil
}

// String encodes the token in its wire form.
func (t *Token) String() string {
	b, _ := json.Marshal(wire{
		CA: t.CAURLs,
		FP: hex.EncodeToString(t.RootFingerprint[:]),
		ID: t.ID,
		S:  base64.RawURLEncoding.EncodeToString(t.Secret[:]),
	})
	return Prefix + base64.RawURLEncoding.EncodeToString(b)
}

// SecretHash is what the CA stores in place of the secret.
func (t *Token) SecretHash() []byte { return HashSecret(t.Secret[:]) }

// HashSecret returns SHA-256(secret). Secrets are 256 random bits, so a fast
// hash is enough: there is nothing to brute-force.
func HashSecret(secret []byte) []byte {
	h := sha256.Sum256(secret)
	return h[:]
}

// SecretMatches reports, in constant time, whether the token's secret hashes
// to storedHash.
func (t *Token) SecretMatches(storedHash []byte) bool {
	return subtle.ConstantTimeCompare(t.SecretHash(), storedHash) == 1
}

// ErrMalformed is wrapped by every Parse error.
var ErrMalformed = errors.New("malformed join token")

// Parse decodes a join token, checking every field. Surrounding white space
// is ignored, since tokens are pasted.
func Parse(s string) (*Token, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, Prefix) {
		return nil, fmt.Errorf("%w: it must start with %q; copy the whole string that `mutual token create` printed", ErrMalformed, Prefix)
	}
	if len(s) > 8192 {
		return nil, fmt.Errorf("%w: %d bytes is far longer than any token", ErrMalformed, len(s))
	}
	raw, err := base64.RawURLEncoding.DecodeString(s[len(Prefix):])
	if err != nil {
		return nil, fmt.Errorf("%w: not base64url after the prefix (was it cut when copied?)", ErrMalformed)
	}
	var w wire
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrMalformed)
	}
	t := &Token{}
	if len(w.CA) == 0 {
		return nil, fmt.Errorf("%w: it names no CA address", ErrMalformed)
	}
	for _, u := range w.CA {
		pu, err := url.Parse(u)
		if err != nil || pu.Scheme != "https" || pu.Hostname() == "" || pu.User != nil || pu.RawQuery != "" || pu.Fragment != "" {
			return nil, fmt.Errorf("%w: CA address %q is not an https URL", ErrMalformed, u)
		}
		t.CAURLs = append(t.CAURLs, u)
	}
	fp, err := hex.DecodeString(w.FP)
	if err != nil || len(fp) != 32 {
		return nil, fmt.Errorf("%w: the root fingerprint must be 64 hex digits", ErrMalformed)
	}
	copy(t.RootFingerprint[:], fp)
	if id, err := hex.DecodeString(w.ID); err != nil || len(id) != 8 {
		return nil, fmt.Errorf("%w: the token id must be 16 hex digits", ErrMalformed)
	}
	t.ID = w.ID
	sec, err := base64.RawURLEncoding.DecodeString(w.S)
	if err != nil || len(sec) != SecretSize {
		return nil, fmt.Errorf("%w: the secret must be %d base64url-encoded bytes", ErrMalformed, SecretSize)
	}
	copy(t.Secret[:], sec)
	return t, nil
}
