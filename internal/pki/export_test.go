package pki

import (
	"crypto"
	"crypto/x509"
)

// LeafTBS is the leaf encoder's TBSCertificate for tmpl (as IssueDER
// prepares it) under is, and whether tmpl, pub and the issuer's key are
// its shape: the test that holds it equal to crypto/x509's must know that
// the encoder, not crypto/x509, wrote what IssueDER returned.
func LeafTBS(is *Issuer, tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, bool) {
	s, ok := signerFor(is.Cert.PublicKey)
	if !ok {
		return nil, false
	}
	return leafTBS(tmpl, is.Cert, pub, s.algID)
}

// ErrSignatureCheck is the error the leaf encoder's check of the issuing
// key's signature wraps.
var ErrSignatureCheck = errSignatureCheck
