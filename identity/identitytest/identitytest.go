// Package identitytest makes throwaway certificate authorities and
// identities for the tests and examples of programs that use packages
// identity and tlsconfig, as net/http/httptest does for HTTP servers.
//
// A CA is a root and an intermediate made fresh in memory; the identities
// it issues follow the X.509-SVID rules mutual's CA follows (one SPIFFE ID
// as the URI SAN, digitalSignature, serverAuth and clientAuth, one hour).
// No key is ever read from or written to disk by this package:
//
//	ca, err := identitytest.NewCA("example.org")
//	if err != nil { ... }
//	web, err := ca.Issue("spiffe://example.org/ns/prod/web")
//	if err != nil { ... }
//	err = web.Save(dir)
//
// Nothing here is fit for production: use `mutual ca init`.
package identitytest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
)

// CA is an in-memory certificate authority for one trust domain.
type CA struct {
	// TrustDomain is the only trust domain the CA issues in.
	TrustDomain spiffeid.TrustDomain
	// Root is the self-signed trust anchor; Intermediate signs the leaves.
	Root, Intermediate *x509.Certificate

	key crypto.Signer
}

// NewCA makes a root and an intermediate for trust domain td ("example.org").
func NewCA(td string) (*CA, error) {
	trust, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		return nil, fmt.Errorf("identitytest: %w", err)
	}
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	root, err := sign(caTemplate(td, "root"), nil, rootKey, rootKey)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	it := caTemplate(td, "intermediate")
	it.MaxPathLenZero = true
	it.PermittedURIDomains = []string{td}
	inter, err := sign(it, root, key, rootKey)
	if err != nil {
		return nil, err
	}
	return &CA{TrustDomain: trust, Root: root, Intermediate: inter, key: key}, nil
}

// Issue makes a fresh key and a one-hour certificate for id, a SPIFFE ID
// of the CA's trust domain, with dnsNames as DNS SANs, and returns them as
// an identity that trusts the CA's root.
func (ca *CA) Issue(id string, dnsNames ...string) (*identity.Identity, error) {
	sid, err := spiffeid.FromString(id)
	if err != nil {
		return nil, fmt.Errorf("identitytest: %w", err)
	}
	if !sid.MemberOf(ca.TrustDomain) {
		return nil, fmt.Errorf("identitytest: %s is not in trust domain %s", sid, ca.TrustDomain.Name())
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(sid.String())
	now := time.Now()
	leaf, err := sign(&x509.Certificate{
		NotBefore:   now.Add(-time.Minute),
		NotAfter:    now.Add(time.Hour),
		URIs:        []*url.URL{u},
		DNSNames:    dnsNames,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, ca.Intermediate, key, ca.key)
	if err != nil {
		return nil, err
	}
	return &identity.Identity{ID: sid, Chain: []*x509.Certificate{leaf, ca.Intermediate}, Key: key, Roots: []*x509.Certificate{ca.Root}}, nil
}

// caTemplate is a day-long CA certificate named for td and its role.
func caTemplate(td, role string) *x509.Certificate {
	now := time.Now()
	return &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{td}, CommonName: td + " test " + role + " CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
}

// sign issues template for key's public half, signed by parentKey as
// parent (self-signed when parent is nil).
func sign(template, parent *x509.Certificate, key *ecdsa.PrivateKey, parentKey crypto.Signer) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	template.SerialNumber = serial
	if parent == nil {
		parent = template
	}
	der, err := x509.CreateCertificate(rand.Reader, template, parent, key.Public(), parentKey)
	if err != nil {
		return nil, fmt.Errorf("identitytest: %w", err)
	}
	return x509.ParseCertificate(der)
}
