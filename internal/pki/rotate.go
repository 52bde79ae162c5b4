package pki

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/atomicfile"
)

// RetiredDir holds the intermediates a rotation replaced, one directory per
// certificate named by the hex of its subject key id, with cert.pem and, for
// a file key, key.pem (encrypted). The CA keeps answering CRL and OCSP for
// each until it expires, so certificates it issued verify and can be revoked
// to the end of their lives.
const RetiredDir = "intermediate/retired"

// RotateOptions configures RotateIntermediate. Zero values are the
// documented defaults.
type RotateOptions struct {
	// Dir is the CA directory (required).
	Dir string
	// Passphrase decrypts the root key file and encrypts a new intermediate
	// key file.
	Passphrase []byte
	// Keys opens the root key when ca.json names it in a token; nil when it
	// is a file.
	Keys KeyOpener
	// NewKey makes the new intermediate key outside the CA directory (as
	// InitOptions.NewKey, asked for RoleIntermediate); nil, or a nil signer
	// from it, means an encrypted file.
	NewKey func(ctx context.Context, role string, t KeyType) (key crypto.Signer, ref string, err error)
	// KeyType of the new key; empty means ca.json's key_type.
	KeyType KeyType
	// Iterations is the PBKDF2 work factor of a new key file; zero means
	// PBKDF2Iterations.
	Iterations int
	// Now and Rand may be injected by tests; nil means time.Now and crypto/rand.
	Now  func() time.Time
	Rand io.Reader
}

// Rotation tells what RotateIntermediate did.
type Rotation struct {
	// New is the intermediate that signs from now on; Old the one it
	// replaced, kept under RetiredDir until it expires.
	New, Old *x509.Certificate
	// KeyRef is where the new key lives (a token reference), or "" for
	// IntermediateKeyFile.
	KeyRef string
	// CrossSigned are New certified by the old roots of a root rotation in
	// progress (CrossSignedFile); empty outside one.
	CrossSigned []*x509.Certificate
}

// RotateIntermediate makes a new intermediate key and certificate, signed by
// the root key (a file or a token key: it must be reachable for this step),
// and makes it the CA's issuing intermediate; the old one moves under
// RetiredDir. The roots and the bundle do not change, so every certificate
// issued under the old intermediate keeps verifying until it expires. A
// running CA picks the change up when restarted.
func RotateIntermediate(ctx context.Context, o RotateOptions) (*Rotation, error) {
	sr, err := openSigningRoot(ctx, &o)
	if err != nil {
		return nil, err
	}
	cfg, td, root, rootKey := sr.cfg, sr.td, sr.cert, sr.key
	olds, err := ReadCertificates(filepath.Join(o.Dir, IntermediateCertFile))
	if err != nil {
		return nil, err
	}
	old := olds[0]
	key, ref, err := newCAKey(ctx, InitOptions{NewKey: o.NewKey, KeyType: o.KeyType, Rand: o.Rand}, RoleIntermediate)
	if err != nil {
		return nil, err
	}
	serial, err := NewSerial(o.Rand)
	if err != nil {
		return nil, err
	}
	now := o.Now()
	cn := fmt.Sprintf("%s intermediate CA %s", td.Name(), now.UTC().Format("20060102T150405Z"))
	tmpl := intermediateTemplate(td.Name(), cn, serial, now, root)
	inter, err := createCert(o.Rand, tmpl, root, key.Public(), rootKey)
	if err != nil {
		return nil, fmt.Errorf("intermediate certificate: %w", err)
	}
	cross, err := crossSign(ctx, o, cfg, root, inter, tmpl)
	if err != nil {
		return nil, err
	}
	if _, err := retire(o.Dir, RetiredDir, &cfg, old, cfg.Keys.Intermediate, IntermediateKeyFile, false); err != nil {
		return nil, err
	}
	if err := install(o, &cfg, inter, key, ref); err != nil {
		return nil, err
	}
	if len(cross) == 0 {
		err = os.Remove(filepath.Join(o.Dir, CrossSignedFile))
		if errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
	} else {
		err = atomicfile.WriteFile(filepath.Join(o.Dir, CrossSignedFile), EncodeCertificates(cross...), 0o644)
	}
	if err != nil {
		return nil, err
	}
	return &Rotation{New: inter, Old: old, KeyRef: ref, CrossSigned: cross}, nil
}

// crossSign certifies inter's subject and key by each root of the bundle
// other than root whose key a root rotation kept under RetiredRootsDir: the
// overlap of a root rotation. Outside an overlap it makes nothing; an old
// root whose key was moved away is skipped.
func crossSign(ctx context.Context, o RotateOptions, cfg Config, root, inter, tmpl *x509.Certificate) ([]*x509.Certificate, error) {
	bundle, err := ReadCertificates(filepath.Join(o.Dir, BundleFile))
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for _, old := range bundle {
		if old.Equal(root) {
			continue
		}
		skid := hex.EncodeToString(old.SubjectKeyId)
		var key crypto.Signer
		if ref := cfg.Keys.Retired[skid]; ref != "" && o.Keys != nil {
			key, err = o.Keys.Open(ctx, ref)
		} else {
			var keyPEM []byte
			keyPEM, err = os.ReadFile(filepath.Join(o.Dir, RetiredRootsDir, skid, "key.pem"))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err == nil {
				key, err = ParsePrivateKey(keyPEM, o.Passphrase)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("cross-sign the new intermediate with the old root %q: %w", old.Subject.CommonName, err)
		}
		t := *tmpl
		if t.SerialNumber, err = NewSerial(o.Rand); err != nil {
			return nil, err
		}
		t.SubjectKeyId = inter.SubjectKeyId
		if old.NotAfter.Before(t.NotAfter) {
			t.NotAfter = old.NotAfter
		}
		c, err := createCert(o.Rand, &t, old, inter.PublicKey, key)
		if err != nil {
			return nil, fmt.Errorf("cross-sign the new intermediate with the old root %q: %w", old.Subject.CommonName, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// signingRoot is the current root of a CA directory, ready to sign.
type signingRoot struct {
	cfg  Config
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  crypto.Signer
}

// openSigningRoot fills in o's defaults and opens the current root (its
// certificate and key, checked to match) of the CA in o.Dir.
func openSigningRoot(ctx context.Context, o *RotateOptions) (*signingRoot, error) {
	if o.Dir == "" {
		return nil, errors.New("no CA directory given")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	cfg, td, err := ReadConfig(o.Dir)
	if err != nil {
		return nil, err
	}
	if o.KeyType == "" {
		o.KeyType = cfg.KeyType
	}
	roots, err := ReadCertificates(filepath.Join(o.Dir, RootCertFile))
	if err != nil {
		return nil, err
	}
	key, err := OpenCAKey(ctx, o.Dir, cfg, RoleRoot, o.Passphrase, o.Keys)
	if err != nil {
		return nil, err
	}
	if !PublicKeysEqual(roots[0].PublicKey, key.Public()) {
		return nil, fmt.Errorf("the root key (%s) does not match %s", KeyLocation(o.Dir, cfg, RoleRoot), filepath.Join(o.Dir, RootCertFile))
	}
	return &signingRoot{cfg: cfg, td: td, cert: roots[0], key: key}, nil
}

// retire keeps cert under dir/under/<its key id>/cert.pem with its key: a
// token reference ref is recorded in cfg.Keys.Retired, else keyFile is
// copied (or moved, when move) to key.pem beside it. It returns where the
// key is now.
func retire(dir, under string, cfg *Config, cert *x509.Certificate, ref, keyFile string, move bool) (string, error) {
	rdir := filepath.Join(dir, under, hex.EncodeToString(cert.SubjectKeyId))
	if err := os.MkdirAll(rdir, 0o700); err != nil {
		return "", fmt.Errorf("retire %q: %w", cert.Subject.CommonName, err)
	}
	if err := atomicfile.WriteFile(filepath.Join(rdir, "cert.pem"), EncodeCertificates(cert), 0o644); err != nil {
		return "", fmt.Errorf("retire %q: %w", cert.Subject.CommonName, err)
	}
	if ref != "" {
		if cfg.Keys.Retired == nil {
			cfg.Keys.Retired = map[string]string{}
		}
		cfg.Keys.Retired[filepath.Base(rdir)] = ref
		return ref, nil
	}
	to, from := filepath.Join(rdir, "key.pem"), filepath.Join(dir, keyFile)
	var err error
	if move {
		err = os.Rename(from, to)
	} else {
		var keyPEM []byte
		if keyPEM, err = os.ReadFile(from); err == nil {
			err = atomicfile.WriteFile(to, keyPEM, 0o600)
		}
	}
	if err != nil {
		return "", fmt.Errorf("retire the key of %q: %w", cert.Subject.CommonName, err)
	}
	return to, nil
}

// install makes inter, with its key (a file, or ref), the issuing
// intermediate: key first, then certificate, then ca.json, each replaced
// atomically.
func install(o RotateOptions, cfg *Config, inter *x509.Certificate, key crypto.Signer, ref string) error {
	keyPath := filepath.Join(o.Dir, IntermediateKeyFile)
	if ref == "" {
		keyPEM, err := MarshalPrivateKey(key, o.Passphrase, o.Iterations)
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(keyPath, keyPEM, 0o600); err != nil {
			return err
		}
	} else if err := os.Remove(keyPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(o.Dir, IntermediateCertFile), EncodeCertificates(inter), 0o644); err != nil {
		return err
	}
	cfg.Keys.Intermediate = ref
	return atomicfile.WriteFile(filepath.Join(o.Dir, ConfigFile), MarshalConfig(*cfg), 0o644)
}

// loadRetired opens the retired intermediates of the CA in dir that have
// not expired at now, each able to sign its CRL and OCSP answers.
func loadRetired(ctx context.Context, dir string, cfg Config, passphrase []byte, keys KeyOpener, now time.Time) ([]*Issuer, error) {
	entries, err := os.ReadDir(filepath.Join(dir, RetiredDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Issuer
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		rdir := filepath.Join(dir, RetiredDir, e.Name())
		certs, err := ReadCertificates(filepath.Join(rdir, "cert.pem"))
		if err != nil {
			return nil, fmt.Errorf("retired intermediate: %w", err)
		}
		if now.After(certs[0].NotAfter) {
			continue // nothing it issued is still valid
		}
		var key crypto.Signer
		if ref := cfg.Keys.Retired[e.Name()]; ref != "" {
			if keys == nil {
				return nil, fmt.Errorf("the retired intermediate %s has its key at %s, and nothing here opens key references", rdir, ref)
			}
			key, err = keys.Open(ctx, ref)
		} else {
			var keyPEM []byte
			if keyPEM, err = os.ReadFile(filepath.Join(rdir, "key.pem")); err == nil {
				key, err = ParsePrivateKey(keyPEM, passphrase)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("the retired intermediate %s (it still signs its CRL and OCSP answers until %s): %w", rdir, certs[0].NotAfter.Format(time.DateOnly), err)
		}
		if !PublicKeysEqual(certs[0].PublicKey, key.Public()) {
			return nil, fmt.Errorf("the key of the retired intermediate %s does not match its cert.pem", rdir)
		}
		out = append(out, &Issuer{Cert: certs[0], Key: key})
	}
	return out, nil
}
