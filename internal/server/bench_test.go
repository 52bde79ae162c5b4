package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
)

// csrPool pre-generates CSRs: key generation is the client's cost, not the CA's.
func csrPool(b *testing.B, n int) []string {
	b.Helper()
	out := make([]string, n)
	for i := range out {
		k, _ := pki.GenerateKey(pki.KeyECDSAP256, nil)
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
		if err != nil {
			b.Fatal(err)
		}
		out[i] = string(pki.EncodeCSR(der))
	}
	return out
}

// BenchmarkIssuanceInProcess measures the issuance pipeline without HTTP:
// CSR check, policy, sign, and the store transaction (embedded SQLite).
func BenchmarkIssuanceInProcess(b *testing.B) {
	ctx := context.Background()
	c := testca.New(b)
	e := startB(b, c)
	enr, err := client.RequestIdentity(ctx, e.tokenB(b, "spiffe://example.org/bench"), pki.KeyECDSAP256, 0)
	if err != nil {
		b.Fatal(err)
	}
	csrs := csrPool(b, 256)
	auth := e.Authority(b)
	var n atomic.Int64
	b.ResetTimer()
	b.SetParallelism(16) // many clients at once, as a CA sees them
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, err := auth.Renew(ctx, enr.Identity.Leaf(), []byte(csrs[i%int64(len(csrs))]), 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
}

// BenchmarkIssuanceHTTPS measures end-to-end renewal through the HTTPS API
// (CSR in, stored certificate out) with keep-alive mTLS clients, against the
// embedded store. The baseline in the same run is the bare round trip of the
// same client to /v1/bundle, which does no crypto and no store access.
func BenchmarkIssuanceHTTPS(b *testing.B) {
	ctx := context.Background()
	c := testca.New(b)
	e := startB(b, c)
	enr, err := client.RequestIdentity(ctx, e.tokenB(b, "spiffe://example.org/bench"), pki.KeyECDSAP256, 0)
	if err != nil {
		b.Fatal(err)
	}
	tc := enr.Identity.TLSCertificate()
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{Certificates: []tls.Certificate{tc}, RootCAs: enr.Identity.RootPool()},
		MaxIdleConnsPerHost: 64,
	}
	hc := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	csrs := csrPool(b, 256)
	bodies := make([][]byte, len(csrs))
	for i, s := range csrs {
		bodies[i], _ = json.Marshal(api.RenewRequest{CSR: s})
	}
	b.Run("baseline-bundle", func(b *testing.B) {
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := hc.Get(e.URL + "/v1/bundle")
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	})
	b.Run("renew", func(b *testing.B) {
		var n atomic.Int64
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := n.Add(1)
				resp, err := hc.Post(e.URL+"/v1/renew", "application/json", bytes.NewReader(bodies[i%int64(len(bodies))]))
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
	})
}

func startB(b *testing.B, c *testca.CA) *env { return start(b, c, "") }

func (e *env) tokenB(b *testing.B, id string) string {
	return e.Token(b, id, api.TokenRequest{CertTTL: api.Duration(time.Hour)})
}
