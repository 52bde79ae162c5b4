package pki_test

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/pki"
)

// BenchmarkIssueDER is the signing step of an enrollment as the CA takes
// it (IssueDER: template, sign, crypto/x509's own check of the signature),
// for a leaf with the CRL and OCSP pointers a served CA writes:
//
//	go test -run XXX -bench IssueDER -benchmem ./internal/pki
func BenchmarkIssueDER(b *testing.B) {
	is, l := benchLeaf(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := is.IssueDER(l); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLeafTBS is the leaf encoder alone (IssueDER less its signature
// and the signature's check):
//
//	go test -run XXX -bench LeafTBS -benchmem ./internal/pki
func BenchmarkLeafTBS(b *testing.B) {
	is, l := benchLeaf(b)
	tmpl, err := is.Template(l)
	if err != nil {
		b.Fatal(err)
	}
	tmpl.RawSubject = []byte{0x30, 0x16, 0x31, 0x14, 0x30, 0x12, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x13, 0x0b, 'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'o', 'r', 'g'}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := pki.LeafTBS(is, tmpl, l.PublicKey); !ok {
			b.Fatal("the leaf encoder did not take the leaf")
		}
	}
}

// benchLeaf is an issuer and a leaf with the CRL and OCSP pointers a
// served CA writes.
func benchLeaf(b *testing.B) (*pki.Issuer, pki.Leaf) {
	ca, is := newIssuer(b)
	return is, pki.Leaf{
		ID: spiffeid.RequireFromString("spiffe://example.org/ns/prod/web"), PublicKey: testKey(b, pki.KeyECDSAP256).Public(),
		TTL: time.Hour, Now: ca.now.Add(time.Hour),
		CRLDistributionPoints: []string{"https://ca.example.org:8443/v1/crl"}, OCSPServers: []string{"https://ca.example.org:8443/v1/ocsp"},
	}
}
