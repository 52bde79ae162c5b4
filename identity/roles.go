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
			var raw []asn1.RawValue
			if rest, err := asn1.Unmarshal(ext.Value, &raw); err != nil || len(rest) > 0 {
				return nil
			}
			roles := make([]string, 0, len(raw))
			for _, v := range raw {
				if v.Class != asn1.ClassUniversal || v.Tag != asn1.TagUTF8String {
					return nil
				}
				roles = append(roles, string(v.Bytes))
			}
			return roles
		}
	}
	return nil
}

// RolesExtension encodes roles as the roles extension.
func RolesExtension(roles []string) (pkix.Extension, error) {
	raw := make([]asn1.RawValue, len(roles))
	for i, r := range roles {
		raw[i] = asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagUTF8String, Bytes: []byte(r)}
	}
	v, err := asn1.Marshal(raw)
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("encode roles: %w", err)
	}
	return pkix.Extension{Id: RolesOID, Value: v}, nil
}
