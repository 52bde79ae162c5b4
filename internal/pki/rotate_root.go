package pki

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/mutual-tls/mutual/internal/atomicfile"
)

// Root rotation files.
const (
	// CrossSignedFile is the issuing intermediate certified by the root a
	// root rotation is replacing (same subject and key as
	// IntermediateCertFile), for relying parties that still trust only the
	// old root. Written by RotateIntermediate during the overlap.
	CrossSignedFile = "intermediate/cross-signed.pem"
	// RetiredRootsDir keeps each replaced root's certificate (and its key
	// file, to be destroyed or archived offline), by subject key id.
	RetiredRootsDir = "root/retired"
)

// bundleFiles are the copies of the trusted roots in a CA directory: the
// CA's bundle and those of the identities ca init made.
var bundleFiles = []string{BundleFile, ServerDir + "/bundle.pem", AdminDir + "/bundle.pem"}

// RootRotation tells what RotateRoot did.
type RootRotation struct {
	// New is the root that signs intermediates from now on, Old the one it
	// replaced.
	New, Old *x509.Certificate
	// KeyRef is where the new root key lives (a token reference), or "" for
	// RootKeyFile; OldKey is where the old key is left, for the operator to
	// destroy or archive.
	KeyRef, OldKey string
}

// RotateRoot introduces a new root, the first step of a root rotation: a
// new root key and self-signed certificate (RotateOptions.NewKey is asked
// for RoleRoot), added to every bundle in the directory, so that both roots
// are trusted during the overlap. Nothing issued changes yet: the next
// RotateIntermediate signs the new intermediate with the new root, and
// cross-signs it with the old one (CrossSignedFile) while the old root's
// key is kept under RetiredRootsDir; WithdrawRoots ends the overlap once
// nothing valid chains to the old root.
//
// The new root is not cross-signed itself: a root of ca init has pathLen 1,
// so old root, new root, intermediate, leaf would be one CA too many.
func RotateRoot(ctx context.Context, o RotateOptions) (*RootRotation, error) {
	sr, err := openSigningRoot(ctx, &o)
	if err != nil {
		return nil, err
	}
	cfg, td, old := sr.cfg, sr.td, sr.cert
	key, ref, err := newCAKey(ctx, InitOptions{NewKey: o.NewKey, KeyType: o.KeyType, Rand: o.Rand}, RoleRoot)
	if err != nil {
		return nil, err
	}
	now := o.Now()
	cn := fmt.Sprintf("%s root CA %s", td.Name(), now.UTC().Format("20060102T150405Z"))
	serial, err := NewSerial(o.Rand)
	if err != nil {
		return nil, err
	}
	tmpl := rootTemplate(td.Name(), cn, serial, now)
	root, err := createCert(o.Rand, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("root certificate: %w", err)
	}
	rot := &RootRotation{New: root, Old: old, KeyRef: ref}
	// The old root's key stays reachable for RotateIntermediate to
	// cross-sign with during the overlap.
	if rot.OldKey, err = retire(o.Dir, RetiredRootsDir, &cfg, old, cfg.Keys.Root, RootKeyFile, true); err != nil {
		return nil, err
	}
	if err := installRoot(o, &cfg, rot, key); err != nil {
		return nil, err
	}
	return rot, nil
}

// installRoot makes rot.New the root that signs intermediates and adds it
// to every bundle: key, certificate, cross-signed certificate, bundles, then
// ca.json.
func installRoot(o RotateOptions, cfg *Config, rot *RootRotation, key crypto.Signer) error {
	if rot.KeyRef == "" {
		keyPEM, err := MarshalPrivateKey(key, o.Passphrase, o.Iterations)
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(filepath.Join(o.Dir, RootKeyFile), keyPEM, 0o600); err != nil {
			return err
		}
	}
	if err := atomicfile.WriteFile(filepath.Join(o.Dir, RootCertFile), EncodeCertificates(rot.New), 0o644); err != nil {
		return err
	}
	if err := addToBundles(o.Dir, rot.New); err != nil {
		return err
	}
	cfg.Keys.Root = rot.KeyRef
	return atomicfile.WriteFile(filepath.Join(o.Dir, ConfigFile), MarshalConfig(*cfg), 0o644)
}

// WithdrawRoots ends a root rotation's overlap: every root but the current
// one (RootCertFile) leaves the bundles, and the cross-signed certificate
// is removed. It refuses while the issuing intermediate is not signed by
// the current root (run RotateIntermediate first), and until the longest
// certificate issued under the old root's intermediates (the policy's
// max_cert_ttl) has expired. The old roots' intermediates stay retired
// until they expire. It returns the withdrawn roots.
func WithdrawRoots(dir string, now time.Time) ([]*x509.Certificate, error) {
	root, err := CheckWithdrawRoots(dir, now)
	if err != nil {
		return nil, err
	}
	var withdrawn []*x509.Certificate
	err = editBundles(dir, func(rs []*x509.Certificate) []*x509.Certificate {
		for _, r := range rs {
			if !r.Equal(root) && !slices.ContainsFunc(withdrawn, r.Equal) {
				withdrawn = append(withdrawn, r)
			}
		}
		return []*x509.Certificate{root}
	})
	if err != nil {
		return nil, err
	}
	if len(withdrawn) == 0 {
		return nil, fmt.Errorf("%s trusts only the current root: nothing to withdraw", filepath.Join(dir, BundleFile))
	}
	if err := os.Remove(filepath.Join(dir, CrossSignedFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return withdrawn, nil
}

// CheckWithdrawRoots says whether WithdrawRoots may run at now, and returns
// the current root, the one that stays.
func CheckWithdrawRoots(dir string, now time.Time) (*x509.Certificate, error) {
	cfg, _, err := ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	roots, err := ReadCertificates(filepath.Join(dir, RootCertFile))
	if err != nil {
		return nil, err
	}
	inters, err := ReadCertificates(filepath.Join(dir, IntermediateCertFile))
	if err != nil {
		return nil, err
	}
	root, inter := roots[0], inters[0]
	if inter.CheckSignatureFrom(root) != nil {
		return nil, fmt.Errorf("the issuing intermediate %q is not signed by the current root %q: run `mutual ca rotate-intermediate` first, then withdraw the old root once the certificates it issued have expired", inter.Subject.CommonName, root.Subject.CommonName)
	}
	if safe := inter.NotBefore.Add(ClockSkew + time.Duration(cfg.Policy.MaxTTL)); now.Before(safe) {
		return nil, fmt.Errorf("certificates issued under the old root may be valid until %s (max_cert_ttl %s after the intermediate rotation): withdraw the old root after then", safe.UTC().Format(time.RFC3339), time.Duration(cfg.Policy.MaxTTL))
	}
	return root, nil
}

// addToBundles adds root to every bundle file in dir that exists.
func addToBundles(dir string, root *x509.Certificate) error {
	return editBundles(dir, func(roots []*x509.Certificate) []*x509.Certificate {
		if slices.ContainsFunc(roots, root.Equal) {
			return roots
		}
		return append(roots, root)
	})
}

// editBundles rewrites every bundle file in dir that exists with edit's
// answer.
func editBundles(dir string, edit func([]*x509.Certificate) []*x509.Certificate) error {
	for _, name := range bundleFiles {
		path := filepath.Join(dir, name)
		roots, err := ReadCertificates(path)
		if errors.Is(err, fs.ErrNotExist) && name != BundleFile {
			continue
		}
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(path, EncodeCertificates(edit(roots)...), 0o644); err != nil {
			return err
		}
	}
	return nil
}
