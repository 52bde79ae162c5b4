package pki_test

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/pki"
)

func TestParseCertificates(t *testing.T) {
	ca := initCA(t, pki.KeyECDSAP256)
	root, inter := ca.res.Root, ca.res.Intermediate
	key, err := pki.MarshalPrivateKey(testKey(t, pki.KeyECDSAP256), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	corrupt := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw[:len(root.Raw)/2]})
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	tests := []struct {
		name string
		data []byte
		want []*x509.Certificate
		// names is a piece of the message that points at the fault.
		names string
	}{
		{"one", pki.EncodeCertificates(root), []*x509.Certificate{root}, ""},
		{"chain in order", pki.EncodeCertificates(inter, root), []*x509.Certificate{inter, root}, ""},
		{"other blocks and text skipped", cat([]byte("issuer: example.org\n"), key, pki.EncodeCertificates(inter), key, pki.EncodeCertificates(root), []byte("trailer\n")), []*x509.Certificate{inter, root}, ""},
		{"CRLF line ends", bytes.ReplaceAll(pki.EncodeCertificates(root), []byte("\n"), []byte("\r\n")), []*x509.Certificate{root}, ""},
		{"empty", nil, nil, "no PEM certificate"},
		{"key only", key, nil, "no PEM certificate"},
		{"DER", root.Raw, nil, "no PEM certificate"},
		{"corrupt first", cat(corrupt, pki.EncodeCertificates(root)), nil, "certificate 1"},
		{"corrupt second", cat(pki.EncodeCertificates(root), corrupt), nil, "certificate 2"},
		{"corrupt first, after a key", cat(key, corrupt, pki.EncodeCertificates(root)), nil, "certificate 1"},
		{"truncated PEM", pki.EncodeCertificates(root)[:100], nil, "no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pki.ParseCertificates(tt.data)
			if tt.want == nil {
				if err == nil {
					t.Fatalf("ParseCertificates accepted it: %d certificates", len(got))
				}
				if !strings.Contains(err.Error(), tt.names) {
					t.Errorf("error %q does not name %q", err, tt.names)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d certificates, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if !got[i].Equal(tt.want[i]) {
					t.Errorf("certificate %d is %q, want %q", i, got[i].Subject, tt.want[i].Subject)
				}
			}
		})
	}
}

func TestReadCertificates(t *testing.T) {
	ca := initCA(t, pki.KeyECDSAP256)
	if got := readCerts(t, ca.path("admin/cert.pem")); len(got) != 2 {
		t.Errorf("admin/cert.pem: %d certificates, want 2", len(got))
	}
	bad := filepath.Join(t.TempDir(), "bad.pem")
	writeFile(t, bad, []byte("not PEM"))
	if _, err := pki.ReadCertificates(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("ReadCertificates(%s) = %v, want an error naming the file", bad, err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	if _, err := pki.ReadCertificates(missing); !os.IsNotExist(err) {
		t.Errorf("ReadCertificates(missing) = %v, want a not-exist error", err)
	}
}

func TestParseCSR(t *testing.T) {
	key := testKey(t, pki.KeyECDSAP256)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"web.example.org"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		data  []byte
		ok    bool
		names string
	}{
		{"PEM", pki.EncodeCSR(der), true, ""},
		{"old PEM type", pem.EncodeToMemory(&pem.Block{Type: "NEW CERTIFICATE REQUEST", Bytes: der}), true, ""},
		{"DER", der, true, ""},
		{"PEM with text before", append([]byte("made by openssl req\n"), pki.EncodeCSR(der)...), true, ""},
		{"certificate instead", pki.EncodeCertificates(initCA(t, pki.KeyECDSAP256).res.Root), false, `"CERTIFICATE"`},
		{"private key instead", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), false, `"PRIVATE KEY"`},
		{"corrupt", pki.EncodeCSR(der[:len(der)-5]), false, "certificate request"},
		{"empty", nil, false, "certificate request"},
		{"text", []byte("hello"), false, "certificate request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := pki.ParseCSR(tt.data)
			if !tt.ok {
				if err == nil {
					t.Fatal("ParseCSR accepted it")
				}
				if !strings.Contains(err.Error(), tt.names) {
					t.Errorf("error %q does not name %q", err, tt.names)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(csr.Raw, der) || !pki.PublicKeysEqual(csr.PublicKey, key.Public()) {
				t.Error("parsed a different request")
			}
		})
	}
}

func TestEncodeCSR(t *testing.T) {
	der := []byte{0x30, 0x03, 0x02, 0x01, 0x00}
	b, rest := pem.Decode(pki.EncodeCSR(der))
	if b == nil || b.Type != "CERTIFICATE REQUEST" || !bytes.Equal(b.Bytes, der) || len(rest) != 0 {
		t.Errorf("EncodeCSR gave block %+v, rest %q", b, rest)
	}
}

func FuzzParseCertificates(f *testing.F) {
	ca := initCA(f, pki.KeyECDSAP256)
	f.Add(pki.EncodeCertificates(ca.res.Root))
	f.Add(pki.EncodeCertificates(ca.res.Intermediate, ca.res.Root))
	f.Add(ca.res.Root.Raw)
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := pki.ParseCertificates(data)
		if err != nil {
			if certs != nil {
				t.Fatal("certificates returned with an error")
			}
			return
		}
		if len(certs) == 0 {
			t.Fatal("no certificates and no error")
		}
		// Written out again, they read back the same.
		again, err := pki.ParseCertificates(pki.EncodeCertificates(certs...))
		if err != nil {
			t.Fatalf("re-encoded certificates do not parse: %v", err)
		}
		if len(again) != len(certs) {
			t.Fatalf("%d certificates became %d", len(certs), len(again))
		}
		for i := range certs {
			if !again[i].Equal(certs[i]) {
				t.Fatalf("certificate %d changed in the round trip", i)
			}
		}
	})
}
