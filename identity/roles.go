package identity

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
)

// RolesOID identifies mutual's roles extension: a non-critical SEQUENCE OF
// UTF8String naming the roles (groups) of the certificate's subject, an input
// to authorization next to the SPIFFE ID.
//
// The arc is provisional until the project's IANA Private Enterprise Number
// is registered; it is defined here only, so that changing it is one edit.
var RolesOID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1, 1}

// Roles returns the roles a certificate carries, or nil.
func Roles(c *x509.Certificate) []string {
	if c == nil {
		return nil
	}
	for _, ext := range c.Extensions {
		if ext.Id.Equal(RolesOID) {
			var roles []string
			if rest, err := asn1.UnmarshalWithParams(ext.Value, &roles, "utf8"); err != nil || len(rest) > 0 {
				return nil
			}
			return roles
		}
	}
	return nil
}

// RolesExtension encodes roles as the roles extension.
func RolesExtension(roles []string) (pkix.Extension, error) {
	v, err := asn1.MarshalWithParams(roles, "utf8")
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("encode roles: %w", err)
	}
	return pkix.Extension{Id: RolesOID, Value: v}, nil
}
