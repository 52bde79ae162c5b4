package publish_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/internal/api"
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
		id := e.enroll(b, "spiffe://example.org/ocsp/bench", api.TokenRequest{})
		r, err := ocsp.CreateRequest(id.Leaf(), id.Chain[1], nil)
		if err != nil {
			b.Fatal(err)
		}
		reqs = append(reqs, r)
	}
	ocspURL := e.httpBase + "/ocsp"
	// In process: the handler without the network (routing, cache, write).
	b.Run("handler", func(b *testing.B) {
		h := e.svc.Server.RevocationHandler()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/ocsp", bytes.NewReader(reqs[i%len(reqs)])))
				if w.Body.Len() == 0 {
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
		crlURL := e.svc.Authority.CRLURL
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
