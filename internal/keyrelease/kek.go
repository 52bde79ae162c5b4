package keyrelease

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/mutual-tls/mutual/internal/atomicfile"
	"github.com/mutual-tls/mutual/internal/pki"
)

// KEK is a key-encryption key as the service uses it: it wraps data keys
// under a label (the sealed header's hash) and unwraps them only under the
// same label. The private half never leaves it. A file key and a key in an
// HSM (a PKCS#11 crypto.Decrypter given to NewDecrypterKEK) are
// interchangeable.
type KEK interface {
	// ID names the key in sealed headers, so that data sealed before a
	// rotation finds its key.
	ID() string
	Wrap(ctx context.Context, dataKey, label []byte) ([]byte, error)
	Unwrap(ctx context.Context, wrapped, label []byte) ([]byte, error)
}

// decrypterKEK is a KEK on an RSA crypto.Decrypter: RSA-OAEP with SHA-256,
// the label as OAEP label.
type decrypterKEK struct {
	id  string
	pub *rsa.PublicKey
	d   crypto.Decrypter
}

// MinRSABits is the smallest RSA key accepted as a KEK.
const MinRSABits = 2048

// NewDecrypterKEK makes a KEK of an RSA private key held anywhere that
// implements crypto.Decrypter (an *rsa.PrivateKey read from a file, or a
// PKCS#11 key), wrapping with RSA-OAEP-SHA-256.
func NewDecrypterKEK(d crypto.Decrypter) (KEK, error) {
	pub, id, err := rsaKEKID(d, "rsa-oaep:")
	if err != nil {
		return nil, err
	}
	return &decrypterKEK{id: id, pub: pub, d: d}, nil
}

// rsaKEKID checks that d is an RSA key of MinRSABits or more and names it:
// prefix and the first 8 bytes of its SHA-256 SPKI hash, in hex.
func rsaKEKID(d crypto.Decrypter, prefix string) (*rsa.PublicKey, string, error) {
	pub, ok := d.Public().(*rsa.PublicKey)
	if !ok {
		return nil, "", fmt.Errorf("key-encryption key: %T is not an RSA key: use an RSA key of %d bits or more", d.Public(), MinRSABits)
	}
	if pub.N.BitLen() < MinRSABits {
		return nil, "", fmt.Errorf("key-encryption key: RSA %d bits, want %d or more", pub.N.BitLen(), MinRSABits)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(der)
	return pub, prefix + hex.EncodeToString(sum[:8]), nil
}

func (k *decrypterKEK) ID() string { return k.id }

func (k *decrypterKEK) Wrap(_ context.Context, dataKey, label []byte) ([]byte, error) {
	return rsa.EncryptOAEP(sha256.New(), rand.Reader, k.pub, dataKey, label)
}

func (k *decrypterKEK) Unwrap(_ context.Context, wrapped, label []byte) ([]byte, error) {
	return k.d.Decrypt(rand.Reader, wrapped, &rsa.OAEPOptions{Hash: crypto.SHA256, Label: label})
}

// Keyring holds the current KEK, which wraps, and every older one still
// kept, which unwrap what was sealed before a rotation.
type Keyring struct {
	current KEK
	byID    map[string]KEK
}

// NewKeyring makes a keyring whose current key is current.
func NewKeyring(current KEK, older ...KEK) *Keyring {
	k := &Keyring{current: current, byID: map[string]KEK{current.ID(): current}}
	for _, o := range older {
		k.byID[o.ID()] = o
	}
	return k
}

// Current is the key that wraps.
func (k *Keyring) Current() KEK { return k.current }

// Get returns the key named id.
func (k *Keyring) Get(id string) (KEK, bool) {
	kek, ok := k.byID[id]
	return kek, ok
}

// File keys: KEKDir/kek-NNNN.pem, PKCS#8 encrypted with the passphrase
// (as the CA keys, readable by openssl pkey), mode 0600; the highest
// number is current.
const (
	kekPrefix = "kek-"
	kekSuffix = ".pem"
	// DefaultKEKBits is the size of a new file KEK.
	DefaultKEKBits = 3072
)

// FileKeys configures the keys kept in a directory.
type FileKeys struct {
	Dir        string
	Passphrase []byte
	// Iterations is the PBKDF2 work factor; 0 means pki's default.
	Iterations int
	// Bits is the RSA size of a new key; 0 means DefaultKEKBits.
	Bits int
}

// Load reads every KEK in the directory, making the first one if there is
// none, and returns them as a keyring.
func (f FileKeys) Load() (*Keyring, error) {
	names, err := f.names()
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		if _, err := f.Rotate(); err != nil {
			return nil, err
		}
		if names, err = f.names(); err != nil {
			return nil, err
		}
	}
	keys, err := f.loadAll(names)
	if err != nil {
		return nil, err
	}
	return NewKeyring(keys[len(keys)-1], keys[:len(keys)-1]...), nil
}

// loadAll reads the KEK files names, in the directory.
func (f FileKeys) loadAll(names []string) ([]KEK, error) {
	var keys []KEK
	for _, n := range names {
		k, err := f.load(filepath.Join(f.Dir, n))
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// Rotate makes a new KEK, which becomes current at the next Load; older
// keys stay, so what they wrapped stays readable. It returns the new key's
// id.
func (f FileKeys) Rotate() (string, error) {
	if len(f.Passphrase) == 0 {
		return "", errors.New("key-encryption keys are encrypted at rest: give a passphrase (--passphrase-file)")
	}
	names, err := f.names()
	if err != nil {
		return "", err
	}
	next := 1
	if len(names) > 0 {
		last := strings.TrimSuffix(strings.TrimPrefix(names[len(names)-1], kekPrefix), kekSuffix)
		n, _ := strconv.Atoi(last)
		next = n + 1
	}
	bits := f.Bits
	if bits == 0 {
		bits = DefaultKEKBits
	}
	key, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return "", err
	}
	kek, err := NewDecrypterKEK(key)
	if err != nil {
		return "", err
	}
	data, err := pki.MarshalPrivateKey(key, f.Passphrase, f.Iterations)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(f.Dir, fmt.Sprintf("%s%04d%s", kekPrefix, next, kekSuffix))
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		return "", err
	}
	return kek.ID(), nil
}

func (f FileKeys) names() ([]string, error) {
	ents, err := os.ReadDir(f.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("key-encryption keys: %w", err)
	}
	var names []string
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, kekPrefix) && strings.HasSuffix(n, kekSuffix) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names, nil
}

func (f FileKeys) load(path string) (KEK, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by others (mode %o): chmod 600 it", path, st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := pki.ParsePrivateKey(data, f.Passphrase)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	d, ok := key.(crypto.Decrypter)
	if !ok {
		return nil, fmt.Errorf("%s: %T cannot decrypt", path, key)
	}
	kek, err := NewDecrypterKEK(d)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return kek, nil
}
