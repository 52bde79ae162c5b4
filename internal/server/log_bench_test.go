package server_test

// What the issuance log costs: issuance with and without it, in one run, on
// the embedded store. The store appends to the log only when a certificate
// carries a LogEntry, so the baseline is the same CA service whose Authority
// stores through noLogStore, which drops the entry before the real store
// sees it. Each benchmark runs both variants in alternating rounds (so that
// drift of the machine affects both alike) and reports:
//
//	certs/s-log, certs/s-nolog   throughput of each variant
//	log-cost-%                   (1 - log/nolog) × 100
//	cpu-us/cert-log, -nolog      CPU time of the whole process per certificate
//
// Sub-benchmarks: store (the store's transaction alone: a certificate row,
// and with the log its entry and hashes), in-process (the CA's pipeline
// without HTTP, 16 callers), https (16 keep-alive mTLS clients renewing as
// fast as they can) and https-3000/s (the foundation's target rate, 3,000
// renewals a second offered by the same clients: there the question is what
// the log costs in CPU, and whether both variants keep up).
//
//	go test -run XXX -bench Log -benchtime 3s ./internal/server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/translog"
)

// noLogStore is the real store without the log: it clears LogEntry, so the
// certificate is stored (and the token consumed) in the same transaction
// as usual, but nothing is appended.
type noLogStore struct{ *store.DB }

func (s noLogStore) RecordIssuance(ctx context.Context, c *store.Certificate, tokenID string, now time.Time) error {
	c.LogEntry = nil
	return s.DB.RecordIssuance(ctx, c, tokenID, now)
}

var _ ca.Store = noLogStore{}

// logBenchCA is a CA service (with or without the log) and a renewing client.
type logBenchCA struct {
	svc  *caservice.Service
	peer *identity.Identity
	hc   *http.Client
	csrs []string
	body [][]byte
	seq  atomic.Int64 // serials of record's certificates
}

func startLogBench(b *testing.B, withLog bool) *logBenchCA {
	b.Helper()
	c := testca.New(b)
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := caservice.Open(ctx, caservice.Options{Dir: c.Dir, Passphrase: []byte(testca.Passphrase), Listen: "127.0.0.1:0"})
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	if !withLog {
		// Before Run: nothing reads the Authority yet.
		svc.Authority.Store = noLogStore{svc.Store}
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	e := &logBenchCA{svc: svc}
	b.Cleanup(func() {
		if e.hc != nil {
			e.hc.CloseIdleConnections()
		}
		cancel()
		if err := <-done; err != nil {
			b.Errorf("Run: %v", err)
		}
		svc.Close()
	})
	adminID, err := identity.Load(c.AdminDir)
	if err != nil {
		b.Fatal(err)
	}
	tc := adminID.TLSCertificate()
	admin, err := client.New([]string{svc.URL}, adminID.Roots, &tc)
	if err != nil {
		b.Fatal(err)
	}
	defer admin.CloseIdleConnections()
	tok, err := admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: "spiffe://example.org/bench", CertTTL: api.Duration(time.Hour)})
	if err != nil {
		b.Fatal(err)
	}
	enr, err := client.RequestIdentity(ctx, tok.Token, pki.KeyECDSAP256, 0)
	if err != nil {
		b.Fatal(err)
	}
	e.peer = enr.Identity
	ptc := e.peer.TLSCertificate()
	e.hc = &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{Certificates: []tls.Certificate{ptc}, RootCAs: e.peer.RootPool()},
		MaxIdleConnsPerHost: 64,
	}}
	e.csrs = csrPool(b, 256)
	for _, s := range e.csrs {
		body, _ := json.Marshal(api.RenewRequest{CSR: s})
		e.body = append(e.body, body)
	}
	return e
}

func (e *logBenchCA) inProcess(i int64) error {
	_, err := e.svc.Authority.Renew(context.Background(), e.peer.Leaf(), []byte(e.csrs[i%int64(len(e.csrs))]), 0)
	return err
}

func (e *logBenchCA) https(i int64) error {
	resp, err := e.hc.Post(e.svc.URL+"/v1/renew", "application/json", bytes.NewReader(e.body[i%int64(len(e.body))]))
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("renew: HTTP %d", resp.StatusCode)
	}
	return nil
}

// record stores a copy of the peer's certificate under a fresh serial
// through st: the store's part of issuance alone (no CSR check, no signing).
func (e *logBenchCA) record(st ca.Store) func(int64) error {
	der := e.peer.Leaf().Raw
	return func(int64) error {
		serial := fmt.Sprintf("%x", 1<<62+e.seq.Add(1))
		now := time.Now()
		return st.RecordIssuance(context.Background(), &store.Certificate{
			Serial: serial, SPIFFEID: "spiffe://example.org/bench", NotBefore: now, NotAfter: now.Add(time.Hour),
			IssuedAt: now, DER: der, RequestedBy: "renew:1",
			LogEntry: translog.Entry{Certificate: der, RequestedBy: "renew:1", IssuedAt: now}.Marshal(),
		}, "", now)
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// logCostLoad runs n operations from workers goroutines, paced at rate a second
// when rate > 0, and returns the wall and CPU time taken.
func logCostLoad(n, workers int, rate float64, op func(int64) error) (wall, cpu time.Duration, err error) {
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	c0, start := processCPU(), time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				if rate > 0 {
					if d := time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
						time.Sleep(d)
					}
				}
				if err := op(i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start), processCPU() - c0, firstErr
}

// logCostCompare runs both variants for b.N certificates each, in alternating
// rounds (up to 20, so that whatever else the machine does weighs on both
// alike), and reports their throughput, CPU and the ratio.
func logCostCompare(b *testing.B, rate float64, withLog, withoutLog func(int64) error) {
	const workers = 16
	// Warm up both (connections, caches) outside the measurement.
	for _, op := range []func(int64) error{withLog, withoutLog} {
		if _, _, err := logCostLoad(64, workers, 0, op); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	var wall, cpu [2]time.Duration
	done := 0
	rounds := min(max(b.N/100, 2), 20)
	for round := 0; round < rounds; round++ {
		n := b.N / rounds
		if round == rounds-1 {
			n = b.N - done
		}
		done += n
		if n == 0 {
			continue
		}
		order := []int{0, 1}
		if round%2 == 1 {
			order = []int{1, 0}
		}
		for _, v := range order {
			op := withLog
			if v == 1 {
				op = withoutLog
			}
			w, c, err := logCostLoad(n, workers, rate, op)
			if err != nil {
				b.Fatal(err)
			}
			wall[v] += w
			cpu[v] += c
		}
	}
	b.StopTimer()
	withRate := float64(b.N) / wall[0].Seconds()
	withoutRate := float64(b.N) / wall[1].Seconds()
	b.ReportMetric(withRate, "certs/s-log")
	b.ReportMetric(withoutRate, "certs/s-nolog")
	b.ReportMetric((1-withRate/withoutRate)*100, "log-cost-%")
	b.ReportMetric(float64(cpu[0].Microseconds())/float64(b.N), "cpu-us/cert-log")
	b.ReportMetric(float64(cpu[1].Microseconds())/float64(b.N), "cpu-us/cert-nolog")
}

// BenchmarkIssuanceLogCost measures issuance with and without the log.
func BenchmarkIssuanceLogCost(b *testing.B) {
	with, without := startLogBench(b, true), startLogBench(b, false)
	b.Run("store", func(b *testing.B) {
		logCostCompare(b, 0, with.record(with.svc.Store), without.record(noLogStore{without.svc.Store}))
	})
	b.Run("in-process", func(b *testing.B) { logCostCompare(b, 0, with.inProcess, without.inProcess) })
	b.Run("https", func(b *testing.B) { logCostCompare(b, 0, with.https, without.https) })
	b.Run("https-3000/s", func(b *testing.B) { logCostCompare(b, 3000, with.https, without.https) })
	// The baseline really left the log alone, and the log really grew.
	ctx := context.Background()
	if n, err := without.svc.Store.LogSize(ctx); err != nil || n > 2 {
		b.Errorf("the baseline's log holds %d entries (%v): only ca init's may be there", n, err)
	}
	if n, err := with.svc.Store.LogSize(ctx); err != nil || n < 3 {
		b.Errorf("the log holds %d entries (%v)", n, err)
	}
}
