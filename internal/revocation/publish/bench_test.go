package publish_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/revocation/publish"
)

// BenchmarkOCSP measures OCSP answers per second from one CA (DESIGN
// budget: 20,000/s): the responder alone with its cache warm, and over
// HTTP (POST, keep-alive) on the plain-HTTP listener. The baseline in the
// same run is the same HTTP client fetching a static answer (the CRL, also
// cached) from the same listener.
func BenchmarkOCSP(b *testing.B) {
	e := startCA(b, "")
	var reqs [][]byte
	for i := 0; i < 64; i++ {
		id := e.Enroll(b, "spiffe://example.org/ocsp/bench", api.TokenRequest{})
		r, err := ocsp.CreateRequest(id.Leaf(), id.Chain[1], nil)
		if err != nil {
			b.Fatal(err)
		}
		reqs = append(reqs, r)
	}
	ocspURL := e.HTTPURL + "/ocsp"
	// In process: the responder without the network (cache, signing).
	b.Run("responder", func(b *testing.B) {
		r, err := publish.NewResponder(e.Issuer, e.Store(b), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if len(r.Respond(context.Background(), reqs[i%len(reqs)])) == 0 {
					b.Error("empty answer")
					return
				}
				i++
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "answers/s")
	})
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	hc := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	b.Run("http", func(b *testing.B) {
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				resp, err := hc.Post(ocspURL, "application/ocsp-request", bytes.NewReader(reqs[i%len(reqs)]))
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				i++
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "answers/s")
	})
	b.Run("http-baseline-crl", func(b *testing.B) {
		crlURL := e.crlURL()
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := hc.Get(crlURL)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "answers/s")
	})
}
