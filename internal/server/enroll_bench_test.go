package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/pgtest"
	"github.com/mutual-tls/mutual/internal/testca"
)

// BenchmarkEnrollHTTPS measures enrollment through the HTTPS API on the
// embedded store: join tokens (made in-process) and CSRs are made before
// the clock starts, 16 keep-alive clients per core post them at once. Each
// request consumes its own token, so the store does all of an enrollment's
// work (token lookup and consumption, certificate, log append).
//
//	go test -run XXX -bench EnrollHTTPS -benchmem -benchtime 2000x \
//	    -cpuprofile cpu.out -memprofile mem.out ./internal/server
func BenchmarkEnrollHTTPS(b *testing.B) { benchEnroll(b, "", 16) }

// BenchmarkEnrollHTTPSSerial is BenchmarkEnrollHTTPS with one client, one
// request at a time: the latency-bound case (c=1), where each enrollment
// pays a whole store transaction and fsync of its own.
//
//	go test -run XXX -bench EnrollHTTPSSerial -benchtime 3000x -cpuprofile cpu.out ./internal/server
func BenchmarkEnrollHTTPSSerial(b *testing.B) { benchEnroll(b, "", 0) }

// BenchmarkEnrollHTTPSPostgres is BenchmarkEnrollHTTPS on PostgreSQL (a
// throwaway server, durability relaxed): where the CA's CPU goes on that
// path, for a profile (-cpuprofile); the database's own is not in it.
func BenchmarkEnrollHTTPSPostgres(b *testing.B) {
	benchEnroll(b, pgtest.Start(b).NewDatabase(b), 16)
}

// benchEnroll runs the enrollment benchmark on storeURL ("" for SQLite)
// with perCore clients per core at once, or a single client when perCore
// is 0.
func benchEnroll(b *testing.B, storeURL string, perCore int) {
	ctx := context.Background()
	c := testca.New(b)
	e := start(b, c, storeURL)
	csrs := csrPool(b, 256)
	admin := spiffeid.RequireFromString("spiffe://" + c.TrustDomain.Name() + "/admin/bench")
	bodies := make([][]byte, b.N)
	for i := range bodies {
		tok, _, err := e.Authority(b).CreateToken(ctx, admin, ca.TokenRequest{ID: fmt.Sprintf("spiffe://%s/bench/%d", c.TrustDomain.Name(), i)})
		if err != nil {
			b.Fatal(err)
		}
		bodies[i], _ = json.Marshal(api.EnrollRequest{Token: tok, CSR: csrs[i%len(csrs)]})
	}
	roots := x509.NewCertPool()
	roots.AddCert(c.Root)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	var n atomic.Int64
	took := make([]time.Duration, b.N)
	enroll := func() bool {
		i := n.Add(1) - 1
		t0 := time.Now()
		defer func() { took[i] = time.Since(t0) }()
		resp, err := hc.Post(e.URL+"/v1/enroll", "application/json", bytes.NewReader(bodies[i]))
		if err != nil {
			b.Error(err)
			return false
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Errorf("status %d: %s", resp.StatusCode, msg)
			return false
		}
		return true
	}
	b.ReportAllocs()
	b.ResetTimer()
	if perCore == 0 {
		for i := 0; i < b.N && enroll(); i++ {
		}
	} else {
		b.SetParallelism(perCore)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() && enroll() {
			}
		})
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
}
