package caservice_test

import (
	"context"
	"testing"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/keyref/softhsmtest"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
)

// BenchmarkIssuanceKey is the issuance rate through the API (renewals over
// mTLS, from GOMAXPROCS goroutines, each a fresh key and CSR) of one CA
// with its intermediate key in a file against the same with it in a
// SoftHSM2 token, in the same run:
//
//	go test -run '^$' -bench BenchmarkIssuanceKey -benchtime 3s ./internal/caservice/
//
// The ratio of the two ns/op is what the token costs per certificate.
func BenchmarkIssuanceKey(b *testing.B) {
	bench := func(b *testing.B, dir string) {
		svc, _ := run(b, caservice.Options{Dir: dir, Passphrase: []byte(testca.Passphrase), Listen: "127.0.0.1:0"})
		id := enroll(b, svc, "spiffe://example.org/bench")
		tc := id.TLSCertificate()
		cl, err := client.New([]string{svc.URL}, id.Roots, &tc)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(cl.CloseIdleConnections)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				csr, err := renewCSR()
				if err == nil {
					_, err = cl.Renew(context.Background(), api.RenewRequest{CSR: csr})
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
	}
	b.Run("file", func(b *testing.B) { bench(b, testca.New(b).Dir) })
	b.Run("softhsm2", func(b *testing.B) {
		tok := softhsmtest.New(b)
		bench(b, initInToken(b, pki.KeyRefs{Intermediate: tok.URI("intermediate")}))
	})
}
