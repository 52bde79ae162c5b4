package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mutual-tls/mutual/internal/procfs"
)

// target is a CA under load: where to post, what it answers on success,
// and the processes whose CPU an issuance costs.
type target struct {
	name string
	// urls are the CA's endpoints (one per replica); client k posts to
	// urls[k%len(urls)].
	urls []string
	// want is the HTTP status of a successful issuance.
	want  int
	roots *x509.CertPool
	// pids are the server processes; pgRoot, when not 0, a PostgreSQL
	// postmaster whose backends count too.
	pids   []int
	pgRoot int
}

// result is one measured run.
type result struct {
	n        int
	elapsed  time.Duration
	p50, p99 time.Duration
	// serverCPU is the CPU time of the CA's processes and database, dbCPU
	// the database's part of it, loadCPU that of this load client, over
	// the run.
	serverCPU, dbCPU, loadCPU time.Duration
}

func (r result) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

// cpuPerIssuance is the CA's CPU time (database included) per certificate.
func (r result) cpuPerIssuance() time.Duration { return r.serverCPU / time.Duration(r.n) }

// loadPerIssuance is the load client's CPU time per certificate.
func (r result) loadPerIssuance() time.Duration { return r.loadCPU / time.Duration(r.n) }

// run posts bodies to t at concurrency conc over keep-alive HTTPS
// connections: the first conc bodies warm the connections up (handshakes)
// before the clock starts, the rest are measured. Every answer must be a
// success.
func run(ctx context.Context, t *target, path string, bodies [][]byte, conc int) (result, error) {
	if len(bodies) <= conc {
		return result{}, fmt.Errorf("%d requests for concurrency %d: want more", len(bodies), conc)
	}
	clients := make([]*http.Client, conc)
	for k := range clients {
		// One connection per client: c keep-alive connections in all.
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: t.roots}, MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1}
		defer tr.CloseIdleConnections()
		clients[k] = &http.Client{Transport: tr, Timeout: time.Minute}
	}
	post := func(k int, body []byte) error {
		u := t.urls[k%len(t.urls)] + path
		resp, err := clients[k].Post(u, "application/json", bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("%s: POST %s: %w", t.name, u, err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != t.want {
			return fmt.Errorf("%s: POST %s: HTTP %d, want %d: %s", t.name, u, resp.StatusCode, t.want, bytes.TrimSpace(msg))
		}
		return nil
	}
	if err := parallel(conc, func(k int) error { return post(k, bodies[k]) }); err != nil {
		return result{}, fmt.Errorf("warm-up: %w", err)
	}
	bodies = bodies[conc:]
	lat := make([]time.Duration, len(bodies))
	var next atomic.Int64
	cpu0, db0, load0 := t.cpu(), t.dbCPU(), selfCPU()
	start := time.Now()
	err := parallel(conc, func(k int) error {
		for {
			i := int(next.Add(1) - 1)
			if i >= len(bodies) || ctx.Err() != nil {
				return ctx.Err()
			}
			t0 := time.Now()
			if err := post(k, bodies[i]); err != nil {
				return err
			}
			lat[i] = time.Since(t0)
		}
	})
	elapsed := time.Since(start)
	cpu1, db1, load1 := t.cpu(), t.dbCPU(), selfCPU()
	if err != nil {
		return result{}, err
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return result{
		n: len(lat), elapsed: elapsed,
		p50: lat[len(lat)/2], p99: lat[len(lat)*99/100],
		serverCPU: cpu1 - cpu0, dbCPU: db1 - db0, loadCPU: load1 - load0,
	}, nil
}

// parallel runs fn(0..n-1) at once and returns the first error.
func parallel(n int, fn func(k int) error) error {
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for k := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(k); err != nil {
				once.Do(func() { first = err })
			}
		}()
	}
	wg.Wait()
	return first
}

// cpu is the CPU time used so far by t's processes and, if it has one, by
// its PostgreSQL.
func (t *target) cpu() time.Duration {
	return procfs.CPUTime(t.pids...) + t.dbCPU()
}

// dbCPU is the CPU time used so far by t's PostgreSQL (the postmaster and
// every backend), or 0.
func (t *target) dbCPU() time.Duration {
	if t.pgRoot == 0 {
		return 0
	}
	return procfs.CPUTime(append([]int{t.pgRoot}, procfs.Children(t.pgRoot)...)...)
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
