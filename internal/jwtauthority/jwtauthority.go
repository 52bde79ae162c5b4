// Package jwtauthority holds the CA's JWT authority keys: ES256 keys that
// sign JWT-SVIDs (SPIFFE JWT-SVID specification), kept in the CA's store
// encrypted like its other keys, so that every replica signs and publishes
// the same keys, and rotated with overlap. A new key is published at once
// and signs once it is ActivateAfter old (every replica and agent has
// fetched it by then); a key replaced stays published for Overlap after
// its successor was made, so that every token it signed keeps verifying
// until it expires.
package jwtauthority

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
)

// Defaults for Options.
const (
	DefaultRotateAfter   = 30 * 24 * time.Hour
	DefaultOverlap       = 48 * time.Hour
	DefaultActivateAfter = 10 * time.Minute
)

// Options tune rotation. Zero values are the defaults.
type Options struct {
	// RotateAfter is the age at which the signing key is replaced.
	RotateAfter time.Duration
	// Overlap is how long a replaced key stays published; it must exceed
	// the longest JWT-SVID lifetime the policy allows.
	Overlap time.Duration
	// ActivateAfter is how long a new key is published before it signs.
	ActivateAfter time.Duration
	// Iterations is the PBKDF2 iteration count new keys are encrypted
	// with; zero means pki.PBKDF2Iterations (tests lower it).
	Iterations int
	// Now replaces time.Now in tests.
	Now func() time.Time
}

// Store keeps the keys; *store.DB provides it.
type Store interface {
	ListJWTKeys(ctx context.Context) ([]store.JWTKey, error)
	AddJWTKey(ctx context.Context, k store.JWTKey, notBefore time.Time) (bool, error)
	DeleteJWTKey(ctx context.Context, kid string) error
}

type key struct {
	ID      string
	Created time.Time
	signer  crypto.Signer
}

// Authority signs JWT-SVIDs and publishes the keys that verify them.
type Authority struct {
	st         Store
	passphrase []byte
	opts       Options

	mu   sync.RWMutex
	keys []key // oldest first
}

// LoadOrCreate reads the JWT authority keys from st, making the first one
// (encrypted with passphrase) if there is none, and rotates the signing
// key if it is older than RotateAfter.
func LoadOrCreate(ctx context.Context, st Store, passphrase []byte, o Options) (*Authority, error) {
	if o.RotateAfter <= 0 {
		o.RotateAfter = DefaultRotateAfter
	}
	if o.Overlap <= 0 {
		o.Overlap = DefaultOverlap
	}
	if o.ActivateAfter <= 0 {
		o.ActivateAfter = DefaultActivateAfter
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	a := &Authority{st: st, passphrase: passphrase, opts: o}
	if _, err := a.Rotate(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// reload reads the keys from the store, decrypting only those not held
// yet, and reports whether the set changed.
func (a *Authority) reload(ctx context.Context) (bool, error) {
	stored, err := a.st.ListJWTKeys(ctx)
	if err != nil {
		return false, fmt.Errorf("the JWT authority keys: %w", err)
	}
	a.mu.RLock()
	held := map[string]crypto.Signer{}
	for _, k := range a.keys {
		held[k.ID] = k.signer
	}
	a.mu.RUnlock()
	keys := make([]key, 0, len(stored))
	for _, sk := range stored {
		signer, ok := held[sk.ID]
		if !ok {
			s, err := pki.ParsePrivateKey(sk.PEM, a.passphrase)
			if err != nil {
				return false, fmt.Errorf("the JWT authority key %s: %w", sk.ID, err)
			}
			if _, ok := s.Public().(*ecdsa.PublicKey); !ok || keyID(s.Public()) != sk.ID {
				return false, fmt.Errorf("the JWT authority key %s in the store is not the P-256 key its kid names: the store is damaged", sk.ID)
			}
			signer = s
		}
		keys = append(keys, key{ID: sk.ID, Created: sk.Created, signer: signer})
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	changed := len(keys) != len(a.keys)
	for i := 0; !changed && i < len(keys); i++ {
		changed = keys[i].ID != a.keys[i].ID
	}
	a.keys = keys
	return changed, nil
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

// Rotate reads the keys from the store (those another replica made
// included), makes a new signing key when there is none or the newest is
// older than RotateAfter, and drops keys replaced more than Overlap ago.
// It reports whether the published set changed.
func (a *Authority) Rotate(ctx context.Context) (bool, error) {
	changed, err := a.reload(ctx)
	if err != nil {
		return false, err
	}
	now := a.opts.Now()
	a.mu.RLock()
	keys := a.keys
	a.mu.RUnlock()
	if len(keys) == 0 || !now.Before(keys[len(keys)-1].Created.Add(a.opts.RotateAfter)) {
		s, err := pki.GenerateKey(pki.KeyECDSAP256, nil)
		if err != nil {
			return false, err
		}
		pemBytes, err := pki.MarshalPrivateKey(s, a.passphrase, a.opts.Iterations)
		if err != nil {
			return false, err
		}
		// Another replica may have rotated meanwhile: the store adds
		// this key only if none is younger than RotateAfter.
		if _, err := a.st.AddJWTKey(ctx, store.JWTKey{ID: keyID(s.Public()), Created: now.UTC(), PEM: pemBytes}, now.Add(-a.opts.RotateAfter)); err != nil {
			return false, err
		}
	}
	// Drop a key once the one after it is older than Overlap.
	for i, k := range keys {
		if i+1 < len(keys) && !now.Before(keys[i+1].Created.Add(a.opts.Overlap)) {
			if err := a.st.DeleteJWTKey(ctx, k.ID); err != nil {
				return false, err
			}
		}
	}
	again, err := a.reload(ctx)
	return changed || again, err
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
	k, err := a.active()
	if err != nil {
		return "", err
	}
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

// active is the key that signs now: the newest one at least
// ActivateAfter old, else the oldest held.
func (a *Authority) active() (key, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if len(a.keys) == 0 {
		return key{}, errors.New("the CA holds no JWT authority key")
	}
	now := a.opts.Now()
	for i := len(a.keys) - 1; i > 0; i-- {
		if !now.Before(a.keys[i].Created.Add(a.opts.ActivateAfter)) {
			return a.keys[i], nil
		}
	}
	return a.keys[0], nil
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
