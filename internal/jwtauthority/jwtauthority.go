// Package jwtauthority holds the CA's JWT authority keys: ES256 keys that
// sign JWT-SVIDs (SPIFFE JWT-SVID specification), each stored encrypted
// like the CA's other keys under DIR/jwt/, rotated with overlap. The newest
// key signs; a key replaced stays published for Overlap after its successor
// was made, so that every token it signed keeps verifying until it expires.
package jwtauthority

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/atomicfile"
	"github.com/mutual-tls/mutual/internal/pki"
)

// Dir is the folder under the CA directory that holds the keys.
const Dir = "jwt"

// manifestFile lists the keys, oldest first, with when each was made.
const manifestFile = "keys.json"

// Defaults for Options.
const (
	DefaultRotateAfter = 30 * 24 * time.Hour
	DefaultOverlap     = 48 * time.Hour
)

// Options tune rotation. Zero values are the defaults.
type Options struct {
	// RotateAfter is the age at which the signing key is replaced.
	RotateAfter time.Duration
	// Overlap is how long a replaced key stays published; it must exceed
	// the longest JWT-SVID lifetime the policy allows.
	Overlap time.Duration
	// Now replaces time.Now in tests.
	Now func() time.Time
}

type key struct {
	ID      string    `json:"kid"`
	Created time.Time `json:"created"`
	signer  crypto.Signer
}

// Authority signs JWT-SVIDs and publishes the keys that verify them.
type Authority struct {
	dir        string
	passphrase []byte
	opts       Options

	mu   sync.RWMutex
	keys []key // oldest first; the last one signs
}

// LoadOrCreate reads the JWT authority keys under caDir/jwt, making the
// first one (encrypted with passphrase) if there is none, and rotates the
// signing key if it is older than RotateAfter.
func LoadOrCreate(caDir string, passphrase []byte, o Options) (*Authority, error) {
	if o.RotateAfter <= 0 {
		o.RotateAfter = DefaultRotateAfter
	}
	if o.Overlap <= 0 {
		o.Overlap = DefaultOverlap
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	a := &Authority{dir: filepath.Join(caDir, Dir), passphrase: passphrase, opts: o}
	b, err := os.ReadFile(filepath.Join(a.dir, manifestFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("the JWT authority keys: %w", err)
	default:
		if err := json.Unmarshal(b, &a.keys); err != nil {
			return nil, fmt.Errorf("the JWT authority keys: %s is damaged (%w): restore it from a backup, or move %s away to start with a new key (JWT-SVIDs already issued stop verifying)", filepath.Join(a.dir, manifestFile), err, a.dir)
		}
		for i := range a.keys {
			if err := a.load(&a.keys[i]); err != nil {
				return nil, err
			}
		}
	}
	if _, err := a.Rotate(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Authority) keyPath(kid string) string { return filepath.Join(a.dir, kid+".key") }

func (a *Authority) load(k *key) error {
	path := a.keyPath(k.ID)
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("the JWT authority key %s: %w", k.ID, err)
	}
	s, err := pki.ParsePrivateKey(data, a.passphrase)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if _, ok := s.Public().(*ecdsa.PublicKey); !ok || keyID(s.Public()) != k.ID {
		return fmt.Errorf("%s: not the P-256 key %s that %s names: restore the key file", path, k.ID, manifestFile)
	}
	k.signer = s
	return nil
}

// keyID is the key's RFC 7638 thumbprint, base64url.
func keyID(pub crypto.PublicKey) string {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		sum := sha256.Sum256([]byte(fmt.Sprint(pub)))
		tp = sum[:]
	}
	return base64.RawURLEncoding.EncodeToString(tp)
}

// Rotate makes a new signing key when there is none or the current one is
// older than RotateAfter, and drops keys replaced more than Overlap ago.
// It reports whether the published set changed.
func (a *Authority) Rotate() (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.opts.Now()
	keys := a.keys
	changed := false
	if len(keys) == 0 || !now.Before(keys[len(keys)-1].Created.Add(a.opts.RotateAfter)) {
		s, err := pki.GenerateKey(pki.KeyECDSAP256, nil)
		if err != nil {
			return false, err
		}
		pemBytes, err := pki.MarshalPrivateKey(s, a.passphrase, 0)
		if err != nil {
			return false, err
		}
		k := key{ID: keyID(s.Public()), Created: now.UTC(), signer: s}
		if err := os.MkdirAll(a.dir, 0o700); err != nil {
			return false, err
		}
		if err := atomicfile.WriteFile(a.keyPath(k.ID), pemBytes, 0o600); err != nil {
			return false, err
		}
		keys = append(append([]key(nil), keys...), k)
		changed = true
	}
	// Keep a key while the one after it is younger than Overlap.
	var kept []key
	for i, k := range keys {
		if i+1 < len(keys) && !now.Before(keys[i+1].Created.Add(a.opts.Overlap)) {
			changed = true
			continue
		}
		kept = append(kept, k)
	}
	if !changed {
		return false, nil
	}
	b, _ := json.MarshalIndent(kept, "", "  ")
	if err := atomicfile.WriteFile(filepath.Join(a.dir, manifestFile), b, 0o600); err != nil {
		return false, fmt.Errorf("the JWT authority keys: %w", err)
	}
	for _, k := range keys {
		if !contains(kept, k.ID) {
			os.Remove(a.keyPath(k.ID))
		}
	}
	a.keys = kept
	return true, nil
}

func contains(keys []key, kid string) bool {
	for _, k := range keys {
		if k.ID == kid {
			return true
		}
	}
	return false
}

// Claims are what a JWT-SVID asserts.
type Claims struct {
	// Subject is the SPIFFE ID (sub).
	Subject spiffeid.ID
	// Audience is aud; at least one value.
	Audience []string
	// IssuedAt and Expiry are iat and exp.
	IssuedAt, Expiry time.Time
}

// Sign returns a JWT-SVID (compact JWS, ES256, typ JWT, kid of the signing
// key) for c.
func (a *Authority) Sign(c Claims) (string, error) {
	if len(c.Audience) == 0 {
		return "", errors.New("a JWT-SVID needs at least one audience")
	}
	a.mu.RLock()
	k := a.keys[len(a.keys)-1]
	a.mu.RUnlock()
	opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), k.ID)
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: k.signer, KeyID: k.ID}}, opts)
	if err != nil {
		return "", fmt.Errorf("the JWT authority key %s: %w", k.ID, err)
	}
	return jwt.Signed(sig).Claims(jwt.Claims{
		Subject:  c.Subject.String(),
		Audience: jwt.Audience(c.Audience),
		IssuedAt: jwt.NewNumericDate(c.IssuedAt),
		Expiry:   jwt.NewNumericDate(c.Expiry),
	}).Serialize()
}

// Published returns the public keys that verify JWT-SVIDs now, by key ID.
func (a *Authority) Published() map[string]crypto.PublicKey {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make(map[string]crypto.PublicKey, len(a.keys))
	for _, k := range a.keys {
		out[k.ID] = k.signer.Public()
	}
	return out
}

// Bundle is the JWT bundle of td: the published keys.
func (a *Authority) Bundle(td spiffeid.TrustDomain) *jwtbundle.Bundle {
	return jwtbundle.FromJWTAuthorities(td, a.Published())
}

// KeyIDs returns the published key IDs, sorted.
func (a *Authority) KeyIDs() []string {
	var ids []string
	for id := range a.Published() {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}
