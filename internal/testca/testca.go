// Package testca makes fresh certificate authorities and identities for
// tests: no key is ever checked in. Defects (expired, not yet valid, wrong
// usage, CA flag, another root) are options, so a test states the one thing
// wrong with the certificate it needs.
package testca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
)

// Passphrase encrypts every test CA's keys.
const Passphrase = "test passphrase"

// CA is a certificate authority made by pki.Init in a temporary directory.
type CA struct {
	Dir          string
	TrustDomain  spiffeid.TrustDomain
	Root         *x509.Certificate
	Intermediate *x509.Certificate
	Issuer       *pki.Issuer
	// AdminDir and ServerDir are the identity directories ca init made.
	AdminDir, ServerDir string
}

// Option changes how New makes a CA.
type Option func(*pki.InitOptions)

// WithKeyType makes every key of type k.
func WithKeyType(k pki.KeyType) Option { return func(o *pki.InitOptions) { o.KeyType = k } }

// WithTrustDomain sets the trust domain (default example.org).
func WithTrustDomain(td string) Option {
	return func(o *pki.InitOptions) { o.TrustDomain = spiffeid.RequireTrustDomainFromString(td) }
}

// New makes a CA with the real pki.Init (with a cheap key-encryption work
// factor, to keep tests fast).
func New(t testing.TB, opts ...Option) *CA {
	t.Helper()
	o := pki.InitOptions{
		Dir:         filepath.Join(t.TempDir(), "ca"),
		TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		Passphrase:  []byte(Passphrase),
		Iterations:  1000,
	}
	for _, f := range opts {
		f(&o)
	}
	res, err := pki.Init(o)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	loaded, err := pki.LoadCA(o.Dir, o.Passphrase)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	return &CA{
		Dir: o.Dir, TrustDomain: o.TrustDomain, Root: res.Root, Intermediate: res.Intermediate, Issuer: loaded.Issuer,
		AdminDir: filepath.Join(o.Dir, pki.AdminDir), ServerDir: filepath.Join(o.Dir, pki.ServerDir),
	}
}

// Key reads and decrypts the CA key stored at name in the CA directory
// (pki.RootKeyFile, pki.IntermediateKeyFile).
func (ca *CA) Key(t testing.TB, name string) crypto.Signer {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ca.Dir, name))
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	k, err := pki.ParsePrivateKey(b, []byte(Passphrase))
	if err != nil {
		t.Fatalf("testca: %s: %v", name, err)
	}
	return k
}

// NewKey makes a fresh ECDSA P-256 key, as clients do.
func NewKey(t testing.TB) crypto.Signer {
	t.Helper()
	key, err := pki.GenerateKey(pki.KeyECDSAP256, nil)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	return key
}

// CSR is a PEM certificate request signed by key (a fresh key when nil)
// with uris as URI SANs (none: the CA takes the identity from the grant).
func CSR(t testing.TB, key crypto.Signer, uris ...string) string {
	t.Helper()
	if key == nil {
		key = NewKey(t)
	}
	tmpl := &x509.CertificateRequest{}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatalf("testca: %v", err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	return string(pki.EncodeCSR(der))
}

// LeafOption is a property or defect of a leaf certificate.
type LeafOption func(*leafConfig)

type leafConfig struct {
	leaf   pki.Leaf
	issuer *pki.Issuer
	extra  []func(*x509.Certificate)
}

// Expired makes a certificate that expired an hour ago.
func Expired() LeafOption {
	return func(c *leafConfig) { c.leaf.Now = time.Now().Add(-2 * time.Hour); c.leaf.TTL = time.Hour }
}

// NotYetValid makes a certificate valid from an hour from now.
func NotYetValid() LeafOption {
	return func(c *leafConfig) {
		c.extra = append(c.extra, func(x *x509.Certificate) { x.NotBefore = time.Now().Add(time.Hour) })
	}
}

// ServerOnly gives the certificate the serverAuth usage only.
func ServerOnly() LeafOption {
	return func(c *leafConfig) {
		c.extra = append(c.extra, func(x *x509.Certificate) { x.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} })
	}
}

// DNS adds DNS names; IP adds IP addresses.
func DNS(names ...string) LeafOption {
	return func(c *leafConfig) { c.leaf.DNSNames = append(c.leaf.DNSNames, names...) }
}

// IP adds IP addresses.
func IP(ips ...string) LeafOption {
	return func(c *leafConfig) {
		for _, s := range ips {
			c.leaf.IPAddresses = append(c.leaf.IPAddresses, net.ParseIP(s))
		}
	}
}

// Extension adds a certificate extension (roles, or a malformed one).
func Extension(ext pkix.Extension) LeafOption {
	return Edit(func(x *x509.Certificate) { x.ExtraExtensions = append(x.ExtraExtensions, ext) })
}

// Edit changes the certificate template before it is signed, for a defect
// no other option names (no SPIFFE ID, a usage missing).
func Edit(f func(*x509.Certificate)) LeafOption {
	return func(c *leafConfig) { c.extra = append(c.extra, f) }
}

// TTL sets the lifetime.
func TTL(d time.Duration) LeafOption { return func(c *leafConfig) { c.leaf.TTL = d } }

// SignedBy issues the leaf from another CA (an "unknown authority" to this one).
func SignedBy(other *CA) LeafOption { return func(c *leafConfig) { c.issuer = other.Issuer } }

// Leaf issues an identity for id (a SPIFFE ID string) straight from the
// intermediate, bypassing the CA service and its store.
func (ca *CA) Leaf(t testing.TB, id string, opts ...LeafOption) *identity.Identity {
	t.Helper()
	sid, err := spiffeid.FromString(id)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	c := &leafConfig{issuer: ca.Issuer, leaf: pki.Leaf{ID: sid, TTL: time.Hour, Now: time.Now()}}
	for _, f := range opts {
		f(c)
	}
	key := NewKey(t)
	c.leaf.PublicKey = key.Public()
	tmpl, err := c.issuer.Template(c.leaf)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	for _, f := range c.extra {
		f(tmpl)
	}
	cert, err := c.issuer.Sign(tmpl, c.leaf.PublicKey)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	return &identity.Identity{ID: sid, Chain: []*x509.Certificate{cert, c.issuer.Cert}, Key: key, Roots: []*x509.Certificate{ca.Root}}
}
