package seal

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hpke"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Offline transfer (optional): the data key is wrapped with HPKE (RFC 9180,
// DHKEM with the certificate's curve, HKDF-SHA-256, ChaCha20-Poly1305) to
// one recipient certificate's public key, with no key service. It is a
// one-time handoff: the recipient's private key alone opens it, nothing
// checks revocation or the policy's not-after at unseal time, and the data
// is lost when that key rotates (leaf keys rotate every renewal).

// offlinePrefix starts the key id of an offline key slot.
const offlinePrefix = "hpke:"

// ErrNotForThisKey: an offline file was sealed to another certificate.
var ErrNotForThisKey = errors.New("this file was sealed offline to another certificate's key: only that key opens it (the data is lost once that key has rotated)")

// OfflineKeyID names a certificate's key in offline key slots.
func OfflineKeyID(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return offlinePrefix + hex.EncodeToString(sum[:16])
}

// IsOffline reports whether h's key slot is an offline (HPKE) one.
func (h *Header) IsOffline() bool { return strings.HasPrefix(h.Slot.KeyID, offlinePrefix) }

func hpkeInfo(body []byte) []byte {
	sum := bodyHash(body)
	return append([]byte("mutual-seal v1 hpke\n"), sum[:]...)
}

var (
	hpkeKDF  = hpke.HKDFSHA256()
	hpkeAEAD = hpke.ChaCha20Poly1305()
)

// CertWrapper is a Wrapper that wraps to Cert's public key (ECDSA P-256 or
// P-384) with HPKE, offline.
type CertWrapper struct{ Cert *x509.Certificate }

// Wrap implements Wrapper.
func (w CertWrapper) Wrap(_ context.Context, body, dataKey []byte) (KeySlot, error) {
	ec, ok := w.Cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return KeySlot{}, fmt.Errorf("offline sealing needs an ECDSA certificate key, this one is %T", w.Cert.PublicKey)
	}
	pub, err := ec.ECDH()
	if err != nil {
		return KeySlot{}, err
	}
	pk, err := hpke.NewDHKEMPublicKey(pub)
	if err != nil {
		return KeySlot{}, err
	}
	ct, err := hpke.Seal(pk, hpkeKDF, hpkeAEAD, hpkeInfo(body), dataKey)
	if err != nil {
		return KeySlot{}, err
	}
	return KeySlot{KeyID: OfflineKeyID(w.Cert), Wrapped: ct}, nil
}

// KeyUnwrapper is an Unwrapper of offline files with the recipient's own
// certificate and private key. It also refuses a file whose policy
// expired by Now (nil: time.Now), as a courtesy: nothing enforces it.
type KeyUnwrapper struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	Now  func() time.Time
}

// Unwrap implements Unwrapper.
func (u KeyUnwrapper) Unwrap(_ context.Context, h *Header) ([]byte, error) {
	if !h.IsOffline() {
		return nil, errors.New("this file was sealed through a key service, not offline: unseal it with --keys")
	}
	if h.Slot.KeyID != OfflineKeyID(u.Cert) {
		return nil, fmt.Errorf("%w (sealed to %s, this certificate is %s)", ErrNotForThisKey, h.Slot.KeyID, OfflineKeyID(u.Cert))
	}
	now := time.Now
	if u.Now != nil {
		now = u.Now
	}
	if !h.Policy.NotAfter.IsZero() && !now().Before(h.Policy.NotAfter) {
		return nil, fmt.Errorf("the policy expired at %s", h.Policy.NotAfter.UTC().Format(time.RFC3339))
	}
	ek, ok := u.Key.(interface {
		ECDH() (*ecdh.PrivateKey, error)
	})
	if !ok {
		return nil, fmt.Errorf("offline unsealing needs an ECDSA private key, this one is %T", u.Key)
	}
	priv, err := ek.ECDH()
	if err != nil {
		return nil, err
	}
	k, err := hpke.NewDHKEMPrivateKey(priv)
	if err != nil {
		return nil, err
	}
	key, err := hpke.Open(k, hpkeKDF, hpkeAEAD, hpkeInfo(h.body), h.Slot.Wrapped)
	if err != nil {
		return nil, fmt.Errorf("%w: the wrapped key does not open: the header or its policy was altered", ErrTampered)
	}
	return key, nil
}
