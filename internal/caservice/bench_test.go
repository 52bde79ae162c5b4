package caservice_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/keyref/softhsmtest"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
)

// benchIssuer renews one identity over mTLS with a running CA.
type benchIssuer struct {
	cl      *client.Client
	elapsed time.Duration
	n       int
}

func newBenchIssuer(b *testing.B, dir string) *benchIssuer {
	svc, _ := run(b, caservice.Options{Dir: dir, Passphrase: []byte(testca.Passphrase), Listen: "127.0.0.1:0"})
	id := enroll(b, svc, "spiffe://example.org/bench")
	tc := id.TLSCertificate()
	cl, err := client.New([]string{svc.URL}, id.Roots, &tc)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cl.CloseIdleConnections)
	return &benchIssuer{cl: cl}
}

// batch issues n certificates from workers goroutines and adds the time it
// took.
func (bi *benchIssuer) batch(b *testing.B, n, workers int) {
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				csr, err := renewCSR()
				if err == nil {
					_, err = bi.cl.Renew(context.Background(), api.RenewRequest{CSR: csr})
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	bi.elapsed += time.Since(start)
	bi.n += n
}

// BenchmarkIssuanceHSM compares the issuance rate through the API
// (renewals over mTLS, 4 at a time, each a fresh key and CSR) of a CA whose
// intermediate key is a file with the same CA set-up whose intermediate key
// is in a SoftHSM2 token. Both run side by side and take turns in batches
// of 20, so that load from elsewhere on the machine falls on both alike:
//
//	go test -run '^$' -bench BenchmarkIssuanceHSM -benchtime 50x ./internal/caservice/
//
// It reports each one's certificates per second and hsm/file, the token's
// rate as a fraction of the file key's.
func BenchmarkIssuanceHSM(b *testing.B) {
	file := newBenchIssuer(b, testca.New(b).Dir)
	tok := softhsmtest.New(b)
	hsm := newBenchIssuer(b, initInToken(b, pki.KeyRefs{Intermediate: tok.URI("intermediate")}))
	file.batch(b, 20, 4) // warm both up: connections, prepared statements
	hsm.batch(b, 20, 4)
	file.elapsed, file.n, hsm.elapsed, hsm.n = 0, 0, 0, 0
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			file.batch(b, 20, 4)
			hsm.batch(b, 20, 4)
		} else {
			hsm.batch(b, 20, 4)
			file.batch(b, 20, 4)
		}
	}
	fileRate := float64(file.n) / file.elapsed.Seconds()
	hsmRate := float64(hsm.n) / hsm.elapsed.Seconds()
	b.ReportMetric(fileRate, "file-certs/s")
	b.ReportMetric(hsmRate, "hsm-certs/s")
	b.ReportMetric(hsmRate/fileRate, "hsm/file")
}
