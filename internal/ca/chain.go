package ca

import (
	"bytes"
	"crypto/x509"

	"github.com/mutual-tls/mutual/internal/pki"
)

// intermediates certify what issuer signed, in chain order: issuer,
// preceded by the copies of issuer that CrossSigned holds (same subject and
// key, certified by a root a root rotation is replacing).
//
// The cross-signed copy comes first because OpenSSL takes the first
// certificate of a chain that names and keys the issuer and does not try
// another: a party trusting only the old root verifies leaf, cross-signed;
// one trusting both (every bundle of the overlap) too. Go's verifier (the
// agent, the proxy, go-spiffe clients) tries every candidate and verifies
// with either root alone.
func (a *Authority) intermediates(issuer *x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	_, _, _, cross := a.signing()
	for _, c := range cross {
		if bytes.Equal(c.RawSubject, issuer.RawSubject) && pki.PublicKeysEqual(c.PublicKey, issuer.PublicKey) && !c.Equal(issuer) {
			out = append(out, c)
		}
	}
	return append(out, issuer)
}

// issuerOf is the intermediate of this CA, current or retired, whose key
// signed cert, or nil.
func (a *Authority) issuerOf(cert *x509.Certificate) *x509.Certificate {
	is, _, retired, _ := a.signing()
	for _, c := range append([]*x509.Certificate{is.Cert}, retired...) {
		if cert.CheckSignatureFrom(c) == nil {
			return c
		}
	}
	return nil
}

// ChainOf is cert with the intermediates that certify it (as an issuance
// answers it), when an intermediate of this CA, current or retired, signed
// it; else nil.
func (a *Authority) ChainOf(cert *x509.Certificate) []*x509.Certificate {
	issuer := a.issuerOf(cert)
	if issuer == nil {
		return nil
	}
	return append([]*x509.Certificate{cert}, a.intermediates(issuer)...)
}
