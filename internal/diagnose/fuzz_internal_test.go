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

// FuzzLocalFile: whatever a certificate, key or bundle file holds (PEM,
// damaged PEM, DER, PKCS#12, garbage), reading it gives certificates or a
// key, or a FileError with a class, a problem and a fix; never a panic.
func FuzzLocalFile(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB#!garbage\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n"))
	f.Add([]byte{0x30, 0x82, 0x01, 0x00, 0x02, 0x01, 0x03})
	f.Add([]byte("not a certificate"))
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, ferr := parseCertFile(b, "certificate")
		checkFileResult(t, len(certs) > 0, ferr)
		key, ferr := parseKeyFile(b)
		checkFileResult(t, key != nil, ferr)
	})
}

func checkFileResult(t *testing.T, got bool, ferr *FileError) {
	t.Helper()
	switch {
	case ferr == nil && !got:
		t.Fatal("neither a result nor an error")
	case ferr != nil && got:
		t.Fatal("both a result and an error")
	case ferr != nil && (ferr.Class == "" || ferr.Problem == "" || ferr.Fix == ""):
		t.Fatalf("a FileError without class, problem or fix: %+v", ferr)
	}
}
