package diagnose

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"testing"
)

// FuzzServerInput: what a server sends that diagnose puts into words (the
// CA names of its certificate request, the text of its alerts) never
// panics the formatting.
func FuzzServerInput(f *testing.F) {
	name, _ := asn1.Marshal(pkix.Name{CommonName: "example.org intermediate CA", Organization: []string{"example.org"}}.ToRDNSequence())
	f.Add(name, "remote error: tls: bad certificate")
	f.Add([]byte{0x30, 0x03, 0x31, 0x01}, "remote error: tls: ")
	f.Fuzz(func(t *testing.T, der []byte, msg string) {
		_ = rdnString(der)
		_ = alertOf(errors.New(msg))
		_ = isAlert(errors.New(msg))
		_ = printable(der)
	})
}
