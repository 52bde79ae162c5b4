package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"slices"
)

// leafExtensionOIDs name the extensions every leaf of an issuer carries
// alike, given the same revocation pointers: crypto/x509 marshals them
// afresh for each certificate from the template's fields, IssueDER hands
// it the marshalled values instead (as ExtraExtensions, which it takes in
// place of building its own).
var leafExtensionOIDs = []asn1.ObjectIdentifier{
	{2, 5, 29, 15},              // key usage
	{2, 5, 29, 37},              // extended key usage
	{2, 5, 29, 19},              // basic constraints
	{2, 5, 29, 31},              // CRL distribution points
	{1, 3, 6, 1, 5, 5, 7, 1, 1}, // authority information access
}

// leafExtensions are the marshalled leafExtensionOIDs extensions of the
// leaves whose templates have proto's fields.
type leafExtensions struct {
	proto *x509.Certificate
	exts  []pkix.Extension
}

// sameFields reports whether a template makes the same leafExtensionOIDs
// extensions as c.proto.
func (c *leafExtensions) sameFields(t *x509.Certificate) bool {
	p := c.proto
	return p.KeyUsage == t.KeyUsage && slices.Equal(p.ExtKeyUsage, t.ExtKeyUsage) &&
		p.BasicConstraintsValid == t.BasicConstraintsValid && p.IsCA == t.IsCA && p.MaxPathLen == t.MaxPathLen && p.MaxPathLenZero == t.MaxPathLenZero &&
		slices.Equal(p.CRLDistributionPoints, t.CRLDistributionPoints) && slices.Equal(p.OCSPServer, t.OCSPServer) &&
		slices.Equal(p.IssuingCertificateURL, t.IssuingCertificateURL)
}

// withLeafExtensions returns tmpl's ExtraExtensions preceded by the
// leafExtensionOIDs extensions its fields make, marshalled once per set of
// fields (one entry: a CA's leaves share them until its revocation
// pointers change). When tmpl's own ExtraExtensions name one of those, or
// it has extended key usages crypto/x509 does not know, it returns them as
// they are: crypto/x509 builds the rest.
func (is *Issuer) withLeafExtensions(tmpl *x509.Certificate) ([]pkix.Extension, error) {
	if len(tmpl.UnknownExtKeyUsage) > 0 {
		return tmpl.ExtraExtensions, nil
	}
	for _, e := range tmpl.ExtraExtensions {
		if slices.ContainsFunc(leafExtensionOIDs, e.Id.Equal) {
			return tmpl.ExtraExtensions, nil
		}
	}
	c := is.leafExts.Load()
	if c == nil || !c.sameFields(tmpl) {
		var err error
		if c, err = marshalLeafExtensions(tmpl); err != nil {
			return nil, err
		}
		is.leafExts.Store(c)
	}
	return append(slices.Clip(c.exts), tmpl.ExtraExtensions...), nil
}

// marshalLeafExtensions has crypto/x509 marshal the leafExtensionOIDs
// extensions of tmpl's fields: it makes a certificate with those fields,
// self-signed by a throwaway key (never the issuer's, which signs nothing
// the issuance log does not hold), and takes them from it.
func marshalLeafExtensions(tmpl *x509.Certificate) (*leafExtensions, error) {
	proto := &x509.Certificate{
		SerialNumber: big.NewInt(1), NotBefore: tmpl.NotBefore, NotAfter: tmpl.NotAfter,
		KeyUsage: tmpl.KeyUsage, ExtKeyUsage: slices.Clone(tmpl.ExtKeyUsage),
		BasicConstraintsValid: tmpl.BasicConstraintsValid, IsCA: tmpl.IsCA, MaxPathLen: tmpl.MaxPathLen, MaxPathLenZero: tmpl.MaxPathLenZero,
		CRLDistributionPoints: slices.Clone(tmpl.CRLDistributionPoints), OCSPServer: slices.Clone(tmpl.OCSPServer),
		IssuingCertificateURL: slices.Clone(tmpl.IssuingCertificateURL),
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue: leaf extensions: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, proto, proto, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("issue: leaf extensions: %w", err)
	}
	made, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issue: leaf extensions: %w", err)
	}
	c := &leafExtensions{proto: proto}
	for _, oid := range leafExtensionOIDs {
		if i := slices.IndexFunc(made.Extensions, func(e pkix.Extension) bool { return e.Id.Equal(oid) }); i >= 0 {
			c.exts = append(c.exts, made.Extensions[i])
		}
	}
	return c, nil
}
