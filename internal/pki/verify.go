package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// CertPool returns a pool holding certs. It is never nil, so a pool built
// from no certificates trusts nothing (a nil pool would mean the system's
// roots).
func CertPool(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// VerifyChain verifies chain[0] against roots, with chain[1:] as the
// intermediates, at now (the zero time means the current time), for usages
// (none means server authentication, as in x509.VerifyOptions; pass
// x509.ExtKeyUsageAny to accept any). Only roots are trusted: never the
// system's. It returns the verified chains; an error names the certificate
// (its SPIFFE ID, else its DNS names or subject, and serial) and wraps the
// x509 error, so errors.As still finds x509.CertificateInvalidError and
// x509.UnknownAuthorityError.
func VerifyChain(chain, roots []*x509.Certificate, now time.Time, usages ...x509.ExtKeyUsage) ([][]*x509.Certificate, error) {
	if len(chain) == 0 || chain[0] == nil {
		return nil, errors.New("no certificate to verify: the chain is empty")
	}
	chains, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         CertPool(roots),
		Intermediates: CertPool(chain[1:]),
		CurrentTime:   now,
		KeyUsages:     usages,
	})
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", DescribeCert(chain[0]), err)
	}
	return chains, nil
}

// DescribeCert names a certificate for a message: its SPIFFE ID, else its
// DNS names, else its subject, followed by its serial number.
func DescribeCert(c *x509.Certificate) string {
	name := c.Subject.String()
	if id, err := x509svid.IDFromCert(c); err == nil {
		name = id.String()
	} else if len(c.DNSNames) > 0 {
		name = strings.Join(c.DNSNames, ", ")
	}
	if name == "" {
		name = "(no name)"
	}
	return name + " (serial " + FormatSerial(c.SerialNumber) + ")"
}
