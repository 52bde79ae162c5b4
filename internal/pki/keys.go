package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/youmark/pkcs8"
)

// KeyType names a kind of private key mutual can generate.
type KeyType string

// The key types mutual generates. ECDSA P-256 is the default everywhere.
const (
	KeyECDSAP256 KeyType = "ecdsa-p256"
	KeyECDSAP384 KeyType = "ecdsa-p384"
	KeyEd25519   KeyType = "ed25519"
	KeyRSA3072   KeyType = "rsa-3072"
)

// KeyTypes lists the accepted key types, default first.
var KeyTypes = []KeyType{KeyECDSAP256, KeyECDSAP384, KeyEd25519, KeyRSA3072}

// ParseKeyType turns a flag value into a KeyType. The empty string means the
// default, ECDSA P-256.
func ParseKeyType(s string) (KeyType, error) {
	if s == "" {
		return KeyECDSAP256, nil
	}
	for _, k := range KeyTypes {
		if string(k) == strings.ToLower(s) {
			return k, nil
		}
	}
	names := make([]string, len(KeyTypes))
	for i, k := range KeyTypes {
		names[i] = string(k)
	}
	return "", fmt.Errorf("unknown key type %q: use one of %s", s, strings.Join(names, ", "))
}

// GenerateKey makes a fresh private key of type t from the random source r
// (crypto/rand when nil).
func GenerateKey(t KeyType, r io.Reader) (crypto.Signer, error) {
	if r == nil {
		r = rand.Reader
	}
	switch t {
	case KeyECDSAP256, "":
		return ecdsa.GenerateKey(elliptic.P256(), r)
	case KeyECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), r)
	case KeyEd25519:
		_, k, err := ed25519.GenerateKey(r)
		return k, err
	case KeyRSA3072:
		return rsa.GenerateKey(r, 3072)
	}
	return nil, fmt.Errorf("unknown key type %q", t)
}

// PBKDF2Iterations is the work factor used when encrypting CA keys at rest.
// It follows OWASP's 2023 recommendation for PBKDF2-HMAC-SHA256.
const PBKDF2Iterations = 600_000

// ErrWrongPassphrase reports that an encrypted key could not be decrypted
// with the passphrase given.
var ErrWrongPassphrase = errors.New("wrong passphrase")

// MarshalPrivateKey encodes key as PEM PKCS#8. With a non-empty passphrase the
// key is encrypted (PBES2: PBKDF2-HMAC-SHA256 and AES-256-CBC), in the form
// that `openssl pkey` reads; iterations of 0 means PBKDF2Iterations.
func MarshalPrivateKey(key crypto.Signer, passphrase []byte, iterations int) ([]byte, error) {
	if len(passphrase) == 0 {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("encode private key: %w", err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
	}
	if iterations <= 0 {
		iterations = PBKDF2Iterations
	}
	der, err := pkcs8.MarshalPrivateKey(key, passphrase, &pkcs8.Opts{
		Cipher: pkcs8.AES256CBC,
		KDFOpts: pkcs8.PBKDF2Opts{
			SaltSize:       16,
			IterationCount: iterations,
			HMACHash:       crypto.SHA256,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("encrypt private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: der}), nil
}

// ParsePrivateKey decodes the first private key in PEM data. An encrypted
// key needs its passphrase; a wrong one yields an error wrapping
// ErrWrongPassphrase. PKCS#8, and for convenience PKCS#1 and SEC 1, are read.
func ParsePrivateKey(data, passphrase []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key found")
		}
		var (
			k   any
			err error
		)
		switch block.Type {
		case "ENCRYPTED PRIVATE KEY":
			if len(passphrase) == 0 {
				return nil, errors.New("the key is encrypted and no passphrase was given")
			}
			k, err = decryptPKCS8(block.Bytes, passphrase)
			if err != nil {
				return nil, err
			}
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", strings.ToLower(block.Type), err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", k)
		}
		return s, nil
	}
}

// decryptPKCS8 decrypts an ENCRYPTED PRIVATE KEY block. The pkcs8 package
// panics on some damaged parameters (an IV or ciphertext of the wrong
// length); that must be an error, not a crash of the CA.
func decryptPKCS8(der, passphrase []byte) (k any, err error) {
	defer func() {
		if r := recover(); r != nil {
			k, err = nil, fmt.Errorf("the encrypted key is damaged: %v", r)
		}
	}()
	k, _, err = pkcs8.ParsePrivateKey(der, passphrase)
	if err != nil {
		return nil, fmt.Errorf("%w (or the key file is damaged: %v)", ErrWrongPassphrase, err)
	}
	return k, nil
}

// KeyDescription names a public key in words: "ECDSA P-256", "RSA 3072".
func KeyDescription(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	}
	return fmt.Sprintf("%T", pub)
}

// PublicKeysEqual reports whether two public keys are the same key.
func PublicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ea, ok := a.(equaler)
	return ok && ea.Equal(b)
}

// Fingerprint is the SHA-256 digest of a certificate's DER encoding, the
// value a join token pins the root by.
func Fingerprint(cert *x509.Certificate) [32]byte {
	return sha256.Sum256(cert.Raw)
}

func randReader() io.Reader { return rand.Reader }
