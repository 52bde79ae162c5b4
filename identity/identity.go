// Package identity reads and writes identity directories, the unit in which
// mutual hands out certificates: cert.pem (the leaf, then its intermediates),
// key.pem (the leaf's PKCS#8 private key, mode 0600), bundle.pem (the
// trusted roots), optionally federated/TD.pem (the roots of each federated
// trust domain, which verify peers of that trust domain only) and,
// optionally, mutual.json (where the identity renews).
//
// A directory written by `mutual cert request`, by the agent or by
// `mutual ca init` can be loaded and turned into TLS material:
//
//	id, err := identity.Load("/etc/mutual/web")
//	if err != nil { ... }
//	cert := id.TLSCertificate()
//	roots := id.RootPool()
//
// WriteDir is the one writer: it puts the files in place as one set, so
// that a reader never sees a new certificate beside an old key, and with
// WriteOptions.Owner writes for another user safely. DirSource follows a
// directory as it is rewritten.
package identity

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/internal/pki"
)

// The files of an identity directory.
const (
	CertFile   = "cert.pem"
	KeyFile    = "key.pem"
	BundleFile = "bundle.pem"
	// FederatedDir holds one file per federated trust domain, named
	// TD.pem (federated/partner.example.pem), with that domain's roots.
	// It is part of the set WriteDir swaps, and absent when there are none.
	FederatedDir = "federated"
)

// federatedExt ends each file name in FederatedDir.
const federatedExt = ".pem"

// Identity is a SPIFFE identity held by this process: its certificate
// chain, its private key and the roots it trusts.
type Identity struct {
	// ID is the SPIFFE ID in the leaf certificate's URI SAN.
	ID spiffeid.ID
	// Chain is the leaf certificate followed by its intermediates.
	Chain []*x509.Certificate
	// Key is the leaf's private key.
	Key crypto.Signer
	// Roots are the trust anchors for peers of the identity's own trust
	// domain.
	Roots []*x509.Certificate
	// Federated are the roots of each federated trust domain: a peer whose
	// SPIFFE ID is in one of them is verified against these only (see
	// Bundles). Nil when the identity trusts its own trust domain only.
	Federated map[spiffeid.TrustDomain][]*x509.Certificate
}

// Leaf returns the identity's own certificate.
func (i *Identity) Leaf() *x509.Certificate { return i.Chain[0] }

// TLSCertificate returns the chain and key in the form crypto/tls uses.
func (i *Identity) TLSCertificate() tls.Certificate {
	c := tls.Certificate{PrivateKey: i.Key, Leaf: i.Chain[0]}
	for _, x := range i.Chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// RootPool returns the roots of the identity's own trust domain as a pool.
// It holds no federated root: verify peers of several trust domains with
// Bundles, which keeps each domain's roots apart.
func (i *Identity) RootPool() *x509.CertPool {
	return pki.CertPool(i.Roots)
}

// Bundles returns the trust bundles, one per trust domain: the identity's
// own (Roots) and each federated one. A peer is verified against the bundle
// of its own SPIFFE ID's trust domain (as package tlsconfig and go-spiffe
// do), so a federated root can never vouch for an ID of this trust domain,
// nor this domain's roots for a foreign ID.
func (i *Identity) Bundles() *x509bundle.Set {
	set := x509bundle.NewSet(x509bundle.FromX509Authorities(i.ID.TrustDomain(), i.Roots))
	for td, roots := range i.Federated {
		if td != i.ID.TrustDomain() {
			set.Add(x509bundle.FromX509Authorities(td, roots))
		}
	}
	return set
}

// ExpiredError reports a certificate used outside its validity period.
type ExpiredError struct {
	Path     string
	NotAfter time.Time
}

func (e *ExpiredError) Error() string {
	return fmt.Sprintf("the certificate in %s expired at %s", e.Path, e.NotAfter.UTC().Format(time.RFC3339))
}

// Load reads the identity directory dir. It checks that the files parse,
// that the key belongs to the leaf and that the leaf carries one SPIFFE ID;
// it does not check validity dates (see Identity.Leaf).
func Load(dir string) (*Identity, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("identity directory: %w", err)
	}
	// The names a user sees come first: a removed name is missing even
	// while the set behind ..data still holds the file. Lstat, not Stat:
	// following name -> ..data -> set races with a rotation that removes
	// the set the link named a moment ago; readSet handles that race.
	for _, name := range []string{CertFile, KeyFile, BundleFile} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err != nil {
			return nil, fmt.Errorf("identity %s: %w", dir, err)
		}
	}
	return readSet(dir, load)
}

func load(dir string) (*Identity, error) {
	certPath := filepath.Join(dir, CertFile)
	chain, err := pki.ReadCertificates(certPath)
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w", dir, err)
	}
	keyPath := filepath.Join(dir, KeyFile)
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w", dir, err)
	}
	key, err := pki.ParsePrivateKey(keyPEM, nil)
	if err != nil {
		return nil, fmt.Errorf("identity %s: %s: %w", dir, keyPath, err)
	}
	if !pki.PublicKeysEqual(chain[0].PublicKey, key.Public()) {
		return nil, fmt.Errorf("identity %s: %s does not belong to the certificate in %s", dir, keyPath, certPath)
	}
	roots, err := pki.ReadCertificates(filepath.Join(dir, BundleFile))
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w", dir, err)
	}
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return nil, fmt.Errorf("identity %s: %s has no SPIFFE ID: %w", dir, certPath, err)
	}
	fed, err := loadFederated(dir, id.TrustDomain())
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w", dir, err)
	}
	return &Identity{ID: id, Chain: chain, Key: key, Roots: roots, Federated: fed}, nil
}

// loadFederated reads dir/federated/TD.pem for each federated trust domain;
// a directory without them (written before federation, or by another tool)
// has none. A file named for the identity's own trust domain, or not for a
// trust domain at all, is refused: it would be trusted for the wrong IDs.
func loadFederated(dir string, own spiffeid.TrustDomain) (map[spiffeid.TrustDomain][]*x509.Certificate, error) {
	fdir := filepath.Join(dir, FederatedDir)
	entries, err := os.ReadDir(fdir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[spiffeid.TrustDomain][]*x509.Certificate{}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), federatedExt)
		if !ok || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %s is not named for a trust domain (TD%s): %w", fdir, e.Name(), federatedExt, err)
		}
		if td == own {
			return nil, fmt.Errorf("%s: %s is for the identity's own trust domain, whose roots are %s; remove it", fdir, e.Name(), BundleFile)
		}
		roots, err := pki.ReadCertificates(filepath.Join(fdir, e.Name()))
		if err != nil {
			return nil, err
		}
		out[td] = roots
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}
