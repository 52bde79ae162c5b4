//go:build cgo

package keyref

import (
	"crypto"
	"crypto/dsa"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"

	"github.com/mutual-tls/mutual/internal/pki"
)

// pkcs11Built says this build can open PKCS#11 tokens.
const pkcs11Built = true

// token is one logged-in PKCS#11 token and its session pool.
type token struct {
	ctx   *crypto11.Context
	where string // "token \"T\"", for messages

	edMu sync.Mutex
	ed   *edSession // for Ed25519 keys (ed25519.go), opened on first use
}

// openToken loads the module, finds the token and logs in with pin.
func openToken(u PKCS11URI, pin string, maxSessions int) (*token, error) {
	cfg := &crypto11.Config{
		Path:        u.ModulePath,
		TokenLabel:  u.Token,
		TokenSerial: u.Serial,
		SlotNumber:  u.Slot,
		Pin:         pin,
		MaxSessions: maxSessions,
	}
	where := PKCS11URI{Token: u.Token, Serial: u.Serial, Slot: u.Slot}.Where()
	ctx, err := crypto11.Configure(cfg)
	if err != nil {
		return nil, classifyOpen(err, u, where)
	}
	return &token{ctx: ctx, where: where}, nil
}

// classifyOpen turns crypto11's open and login errors into ones that name
// the token and the fix.
func classifyOpen(err error, u PKCS11URI, where string) error {
	var code pkcs11.Error
	if errors.As(err, &code) {
		switch code {
		case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE:
			return fmt.Errorf("log in to %s: %w (%v); check the PIN in %s", where, ErrWrongPIN, err, pinWhere(u.PIN))
		case pkcs11.CKR_PIN_LOCKED:
			return fmt.Errorf("log in to %s: the PIN is locked after too many wrong attempts (%v); unlock it with the token's security officer PIN", where, err)
		}
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "could not find PKCS#11 token"):
		return fmt.Errorf("%s: %w in %s (%v); check token=, serial= or slot-id= against the module's tokens (softhsm2-util --show-slots for SoftHSM2)", where, ErrNoToken, u.ModulePath, err)
	case strings.Contains(msg, "failed to create module context"):
		return attrErr("module-path", fmt.Sprintf("%s did not load as a PKCS#11 library (%v)", u.ModulePath, err), "point module-path at the token vendor's PKCS#11 .so")
	}
	return fmt.Errorf("open %s through %s: %w", where, u.ModulePath, err)
}

func pinWhere(p PINSource) string {
	if p.Env != "" {
		return "the environment variable " + p.Env
	}
	return p.File
}

// find returns the one key pair u names: through crypto11 (ECDSA, RSA),
// else an Ed25519 key pair.
func (t *token) find(u PKCS11URI) (crypto.Signer, error) {
	key, err := t.find11(u)
	if err == nil {
		return key, nil
	}
	if ed, edErr := t.findEd25519(u); edErr == nil && ed != nil {
		return ed, nil
	}
	return nil, err
}

// find11 returns the one ECDSA or RSA key pair u names.
func (t *token) find11(u PKCS11URI) (crypto.Signer, error) {
	var label []byte
	if u.Object != "" {
		label = []byte(u.Object)
	}
	pairs, err := t.ctx.FindKeyPairs(u.ID, label)
	if err != nil {
		return nil, fmt.Errorf("look for %s: %w", u.Where(), err)
	}
	switch len(pairs) {
	case 0:
		return nil, fmt.Errorf("%s: %w; check object= and id= against the token's key pairs, or generate the key first (it needs both the private and the public key object)", u.Where(), ErrNotFound)
	case 1:
	default:
		return nil, fmt.Errorf("%s matches %d key pairs; add id= to the URI to pick one", u.Where(), len(pairs))
	}
	switch pub := pairs[0].Public().(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey:
	case *dsa.PublicKey:
		return nil, fmt.Errorf("%s is a DSA key; mutual signs with ECDSA or RSA token keys: generate an ECDSA P-256 key pair and point object= at it", u.Where())
	default:
		return nil, fmt.Errorf("%s is a %s key; mutual signs with ECDSA or RSA token keys: generate an ECDSA P-256 key pair and point object= at it", u.Where(), pki.KeyDescription(pub))
	}
	return wrapKey(pairs[0], u.Where()), nil
}

// generate makes a new non-extractable key pair of type kt labelled
// u.Object, refusing a label or id that is taken.
func (t *token) generate(u PKCS11URI, kt pki.KeyType) (crypto.Signer, error) {
	if kt == pki.KeyEd25519 {
		return t.generateEd25519(u)
	}
	id, err := newKeyID(u, func(id, label []byte) (int, error) {
		keys, err := t.ctx.FindPrivateKeys(id, label)
		return len(keys), err
	})
	if err != nil {
		return nil, err
	}
	var key crypto11.Signer
	switch kt {
	case pki.KeyECDSAP256:
		key, err = t.ctx.GenerateECDSAKeyPairWithLabel(id, []byte(u.Object), elliptic.P256())
	case pki.KeyECDSAP384:
		key, err = t.ctx.GenerateECDSAKeyPairWithLabel(id, []byte(u.Object), elliptic.P384())
	case pki.KeyRSA3072:
		key, err = t.ctx.GenerateRSAKeyPairWithLabel(id, []byte(u.Object), 3072)
	default:
		return nil, fmt.Errorf("%s: mutual makes %s keys only in files; in a token use %s, %s or %s", u.Where(), kt, pki.KeyECDSAP256, pki.KeyECDSAP384, pki.KeyRSA3072)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s key %s: %w", kt, u.Where(), err)
	}
	return wrapKey(key, u.Where()), nil
}

// newKeyID checks that no private key has u's label or id (count counts
// the private keys with an id or a label) and returns the id of a new key
// pair: u's, or 16 random bytes.
func newKeyID(u PKCS11URI, count func(id, label []byte) (int, error)) ([]byte, error) {
	taken, err := count(nil, []byte(u.Object))
	if err == nil && taken == 0 && len(u.ID) > 0 {
		taken, err = count(u.ID, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("look for %s: %w", u.Where(), err)
	}
	if taken > 0 {
		return nil, fmt.Errorf("%s: %w; choose another object= label (and id=), or use the existing key", u.Where(), ErrExists)
	}
	if len(u.ID) > 0 {
		return u.ID, nil
	}
	id := make([]byte, 16)
	if _, err := io.ReadFull(rand.Reader, id); err != nil {
		return nil, err
	}
	return id, nil
}

// wrapKey returns a tokenSigner, or for an RSA key a tokenDecrypter, so that
// callers can decrypt with it too.
func wrapKey(key crypto11.Signer, where string) crypto.Signer {
	s := &tokenSigner{key: key, where: where}
	if d, ok := key.(crypto.Decrypter); ok {
		if _, rsaKey := key.Public().(*rsa.PublicKey); rsaKey {
			return &tokenDecrypter{tokenSigner: s, d: d}
		}
	}
	return s
}

func (t *token) close() error {
	t.edMu.Lock()
	if t.ed != nil {
		t.ed.close()
		t.ed = nil
	}
	t.edMu.Unlock()
	if err := t.ctx.Close(); err != nil {
		return fmt.Errorf("close %s: %w", t.where, err)
	}
	return nil
}

// tokenSigner signs inside the token and says which key failed when it
// cannot.
type tokenSigner struct {
	key   crypto11.Signer
	where string
}

// Public returns the key pair's public key, read from the token when found.
func (s *tokenSigner) Public() crypto.PublicKey { return s.key.Public() }

// Sign asks the token to sign digest; the private key never leaves it.
func (s *tokenSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := s.key.Sign(r, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("sign with %s: %w", s.where, err)
	}
	return sig, nil
}

// tokenDecrypter is an RSA token key, which also decrypts inside the token.
type tokenDecrypter struct {
	*tokenSigner
	d crypto.Decrypter
}

// Decrypt asks the token to decrypt ciphertext (opts *rsa.OAEPOptions for
// OAEP, nil for PKCS #1 v1.5); the private key never leaves it.
func (s *tokenDecrypter) Decrypt(r io.Reader, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	pt, err := s.d.Decrypt(r, ciphertext, opts)
	if err != nil {
		return nil, fmt.Errorf("decrypt with %s: %w", s.where, err)
	}
	return pt, nil
}
