package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ClockSkew is how far NotBefore is back-dated so that peers whose clocks
// run a little behind accept a certificate at once.
const ClockSkew = time.Minute

// Issuer signs leaf certificates with an intermediate CA key.
type Issuer struct {
	// Cert is the issuing (intermediate) certificate.
	Cert *x509.Certificate
	// Key is Cert's private key.
	Key crypto.Signer
	// Rand is the randomness for serials and signatures; nil means crypto/rand.
	Rand io.Reader

	// subject caches the leaf subject of the trust domain last issued for.
	subject atomic.Pointer[subjectDER]
}

// Leaf describes the certificate Issue makes.
type Leaf struct {
	ID          spiffeid.ID
	PublicKey   crypto.PublicKey
	DNSNames    []string
	IPAddresses []net.IP
	// TTL is the lifetime counted from Now (NotBefore is back-dated by ClockSkew).
	TTL time.Duration
	Now time.Time
	// CRLDistributionPoints and OCSPServers, when set, tell relying
	// parties where to check the certificate's revocation.
	CRLDistributionPoints []string
	OCSPServers           []string
	// Extensions are added as they are (mutual's roles extension).
	Extensions []pkix.Extension
}

// NewSerial returns a random positive 128-bit serial number.
func NewSerial(r io.Reader) (*big.Int, error) {
	if r == nil {
		r = rand.Reader
	}
	b := make([]byte, 16)
	for {
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		s := new(big.Int).SetBytes(b)
		if s.Sign() > 0 {
			return s, nil
		}
	}
}

// Issue signs a leaf certificate for l: not a CA, digitalSignature, serverAuth
// and clientAuth, the SPIFFE ID as its one URI SAN. The lifetime is cut to
// the issuer's own NotAfter.
func (is *Issuer) Issue(l Leaf) (*x509.Certificate, error) {
	der, _, err := is.IssueDER(l)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// IssueDER is Issue without parsing what it signed: the certificate's DER
// and the template it was made from, whose serial number and validity
// (whole seconds, UTC) are the certificate's. It is the issuing CA's hot
// path, which stores and answers the DER and needs nothing else of it;
// the signature has been checked with the issuer's public key.
func (is *Issuer) IssueDER(l Leaf) (der []byte, tmpl *x509.Certificate, err error) {
	if tmpl, err = is.Template(l); err != nil {
		return nil, nil, err
	}
	// The subject of a leaf without DNS names is the same for every leaf
	// of a trust domain: marshal it once (as crypto/x509 would).
	if tmpl.Subject.CommonName == "" {
		tmpl.RawSubject, err = is.orgSubject(l.ID.TrustDomain().Name())
	} else {
		tmpl.RawSubject, err = asn1.Marshal(tmpl.Subject.ToRDNSequence())
	}
	if err != nil {
		return nil, nil, fmt.Errorf("issue %s: subject: %w", l.ID, err)
	}
	if der, err = is.signLeaf(tmpl, l.PublicKey); err != nil {
		return nil, nil, err
	}
	return der, tmpl, nil
}

// signLeaf signs tmpl, as Template made it, for pub: its TBSCertificate
// written by the leaf encoder (leafder.go), which is crypto/x509's to the
// byte at a fraction of the CPU, when the issuer's key and pub are of a
// kind it knows; by x509.CreateCertificate otherwise.
func (is *Issuer) signLeaf(tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	keyPub, ok := is.Key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || len(is.Cert.RawSubject) == 0 || !keyPub.Equal(is.Cert.PublicKey) {
		return is.sign(tmpl, pub) // crypto/x509 says what is wrong
	}
	s, ok := signerFor(is.Cert.PublicKey)
	if !ok {
		return is.sign(tmpl, pub)
	}
	tbs, ok := leafTBS(tmpl, is.Cert, pub, s.algID)
	if !ok {
		return is.sign(tmpl, pub)
	}
	der, err := signTBS(is.rand(), tbs, s, is.Key, is.Cert)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", tmpl.URIs[0], err)
	}
	return der, nil
}

// rand is the issuer's randomness.
func (is *Issuer) rand() io.Reader {
	if is.Rand == nil {
		return rand.Reader
	}
	return is.Rand
}

// subjectDER is a trust domain's leaf subject, marshalled.
type subjectDER struct {
	td  string
	der []byte
}

// orgSubject returns the DER of the subject O=td, from the one-entry
// cache when it holds td (a CA serves one trust domain).
func (is *Issuer) orgSubject(td string) ([]byte, error) {
	if c := is.subject.Load(); c != nil && c.td == td {
		return c.der, nil
	}
	der, err := asn1.Marshal(pkix.Name{Organization: []string{td}}.ToRDNSequence())
	if err != nil {
		return nil, err
	}
	is.subject.Store(&subjectDER{td: td, der: der})
	return der, nil
}

// Template is the certificate Issue signs for l, with a fresh serial. Tests
// that need a defective leaf change it and call Sign.
func (is *Issuer) Template(l Leaf) (*x509.Certificate, error) {
	if l.ID.IsZero() {
		return nil, errors.New("issue: no SPIFFE ID")
	}
	if l.TTL <= 0 {
		return nil, fmt.Errorf("issue %s: lifetime must be positive", l.ID)
	}
	now := l.Now
	if now.IsZero() {
		now = time.Now()
	}
	serial, err := NewSerial(is.Rand)
	if err != nil {
		return nil, err
	}
	// A certificate's times have whole seconds; the template's say what
	// the certificate will.
	notAfter := now.Add(l.TTL).Truncate(time.Second).UTC()
	if notAfter.After(is.Cert.NotAfter) {
		notAfter = is.Cert.NotAfter.UTC()
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("issue %s: the issuing CA %q expired at %s", l.ID, is.Cert.Subject.CommonName, is.Cert.NotAfter.Format(time.RFC3339))
	}
	u, _ := url.Parse(l.ID.String())
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{l.ID.TrustDomain().Name()}},
		NotBefore:             now.Add(-ClockSkew).Truncate(time.Second).UTC(),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
		DNSNames:              l.DNSNames,
		IPAddresses:           l.IPAddresses,
		CRLDistributionPoints: l.CRLDistributionPoints,
		OCSPServer:            l.OCSPServers,
		ExtraExtensions:       l.Extensions,
	}
	if len(l.DNSNames) > 0 {
		tmpl.Subject.CommonName = l.DNSNames[0]
	}
	return tmpl, nil
}

// Sign signs tmpl for pub with the issuer's key.
func (is *Issuer) Sign(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	der, err := is.sign(tmpl, pub)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// sign signs tmpl for pub with the issuer's key and returns the DER.
func (is *Issuer) sign(tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.CreateCertificate(is.rand(), tmpl, is.Cert, pub, is.Key)
	if err != nil {
		name := "certificate"
		if len(tmpl.URIs) > 0 {
			name = tmpl.URIs[0].String()
		}
		return nil, fmt.Errorf("sign certificate for %s: %w", name, err)
	}
	return der, nil
}

// Lifetime returns when a certificate was issued and for how long it is
// useful: NotBefore is back-dated by ClockSkew, which is not part of its
// life. Renewal at half-life counts from here.
func Lifetime(c *x509.Certificate) (issued time.Time, life time.Duration) {
	issued = c.NotBefore.Add(ClockSkew)
	if issued.After(c.NotAfter) {
		issued = c.NotBefore
	}
	return issued, c.NotAfter.Sub(issued)
}
