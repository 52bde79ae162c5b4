package identity_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/identity"
)

// TestRoles: the roles extension round-trips, and anything else in its
// place reads as no roles rather than as some roles.
func TestRoles(t *testing.T) {
	ext, err := identity.RolesExtension([]string{"deploy", "read"})
	if err != nil {
		t.Fatal(err)
	}
	if !ext.Id.Equal(identity.RolesOID) || ext.Critical {
		t.Fatalf("extension %v critical=%v, want the non-critical roles OID", ext.Id, ext.Critical)
	}
	ia5, _ := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassUniversal, Tag: asn1.TagIA5String, Bytes: []byte("deploy")}})
	tests := []struct {
		name string
		cert *x509.Certificate
		want []string
	}{
		{"two roles", &x509.Certificate{Extensions: []pkix.Extension{ext}}, []string{"deploy", "read"}},
		{"no certificate", nil, nil},
		{"no extension", &x509.Certificate{}, nil},
		{"not DER", &x509.Certificate{Extensions: []pkix.Extension{{Id: identity.RolesOID, Value: []byte{0x30, 0x05}}}}, nil},
		{"trailing bytes", &x509.Certificate{Extensions: []pkix.Extension{{Id: identity.RolesOID, Value: append(append([]byte{}, ext.Value...), 0)}}}, nil},
		{"not UTF8String", &x509.Certificate{Extensions: []pkix.Extension{{Id: identity.RolesOID, Value: ia5}}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := identity.Roles(tt.cert); strings.Join(got, ",") != strings.Join(tt.want, ",") || (got == nil) != (tt.want == nil) {
				t.Errorf("Roles = %q, want %q", got, tt.want)
			}
		})
	}
}
