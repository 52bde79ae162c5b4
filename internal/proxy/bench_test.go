package proxy_test

// Benchmarks of the inbound proxy against a bare crypto/tls server on the
// same certificates, in the same run (DESIGN.md, "Budgets"). Each benchmark
// alternates rounds of the baseline and of the proxy, so drift in the
// machine hits both alike, and reports both sides and their ratio as custom
// metrics; ns/op is suppressed because one op is run on each side.
//
//	go test -run '^$' -bench Inbound -benchtime 2s ./internal/proxy
//	go test -run '^$' -bench IdleConnMemory -benchtime 1x -v ./internal/proxy
//
// docs/benchmarks.md has the results and how to profile each side (every
// goroutine carries a pprof label side=proxy|bare|target|client).
//
// The clients run in this process, on the same cores as the servers, and
// pay the same cost against both, so a ratio here understates the proxy's
// own overhead; bench/run.sh pins servers and load to separate cores and
// measures server CPU per operation. BenchmarkIdleConnMemory runs its
// clients and the proxy's targets in a child process (TestBenchIdleClients),
// so that the heap and stacks it measures are the servers' only.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/procfs"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// benchPKI is one CA with a server identity (the proxy's and the bare
// server's) and a client identity, saved as identity directories.
type benchPKI struct {
	server, client       *identity.Identity
	serverDir, clientDir string
}

func newBenchPKI(tb testing.TB) *benchPKI {
	tb.Helper()
	ca := testca.New(tb)
	k := &benchPKI{
		server: ca.Leaf(tb, "spiffe://example.org/bench/server", testca.IP("127.0.0.1")),
		client: ca.Leaf(tb, "spiffe://example.org/bench/client"),
	}
	dir := tb.TempDir()
	k.serverDir, k.clientDir = filepath.Join(dir, "server"), filepath.Join(dir, "client")
	if err := k.server.Save(k.serverDir); err != nil {
		tb.Fatal(err)
	}
	if err := k.client.Save(k.clientDir); err != nil {
		tb.Fatal(err)
	}
	return k
}

// benchClientTLS is the load's configuration: TLS 1.3, a client certificate, the
// server verified, and no session cache, so every connection is a full
// handshake.
func benchClientTLS(id *identity.Identity) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.TLSCertificate()},
		RootCAs:      id.RootPool(),
		ServerName:   "127.0.0.1",
	}
}

// bareTLS is the baseline server: crypto/tls verifying the client's chain
// itself, with the same certificate and roots as the proxy.
func (k *benchPKI) bareTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{k.server.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    k.server.RootPool(),
	}
}

// benchInbound runs the proxy as `mutual proxy inbound --identity-dir` does:
// a directory source, an --allow policy, Prometheus metrics and a JSON log
// line per connection or request (written to io.Discard).
func benchInbound(tb testing.TB, k *benchPKI, target string, protocol proxy.Protocol) (string, *proxy.Inbound) {
	tb.Helper()
	src, err := identity.NewDirSource(k.serverDir)
	if err != nil {
		tb.Fatal(err)
	}
	pol, err := authz.FromPatterns([]string{"spiffe://example.org/bench/*"})
	if err != nil {
		tb.Fatal(err)
	}
	p, err := proxy.NewInbound(proxy.InboundConfig{
		Target: target, SVID: src, Bundle: src, Policy: proxy.StaticPolicy{P: pol}, Protocol: protocol,
		Limits:  proxy.Limits{DrainTimeout: time.Second},
		Log:     slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Metrics: proxy.NewMetrics(prometheus.NewRegistry(), "inbound"),
	})
	if err != nil {
		tb.Fatal(err)
	}
	ln := benchListen(tb)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go pprof.Do(ctx, pprof.Labels("side", "proxy"), func(ctx context.Context) { done <- p.Serve(ctx, ln) })
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("proxy: %v", err)
		}
	})
	return ln.Addr().String(), p
}

func benchListen(tb testing.TB) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return ln
}

// benchConnServer serves raw connections: benchServeConns runs handle on
// every connection it accepts (wrapped in TLS when cfg is not nil) until
// cleanup, which closes the listener and every open connection.
type benchConnServer struct {
	addr   string
	active atomic.Int64
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func benchServeConns(tb testing.TB, side string, cfg *tls.Config, handle func(net.Conn)) *benchConnServer {
	tb.Helper()
	ln := benchListen(tb)
	s := &benchConnServer{addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	s.wg.Go(func() {
		pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("side", side)))
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if cfg != nil {
				c = tls.Server(c, cfg)
			}
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.active.Add(1)
			s.wg.Go(func() {
				defer func() {
					c.Close()
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
					s.active.Add(-1)
				}()
				handle(c)
			})
		}
	})
	tb.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

// benchEcho answers every read with the same bytes, through a 1 KiB buffer (the
// size the proxy keeps per idle TLS side).
func benchEcho(c net.Conn) {
	buf := make([]byte, 1024)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// benchSink discards what it reads until EOF, then answers with the byte count
// (8 bytes, big-endian) and closes.
func benchSink(c net.Conn) {
	buf := make([]byte, 32<<10)
	var n uint64
	for {
		k, err := c.Read(buf)
		n += uint64(k)
		if err != nil {
			break
		}
	}
	var out [8]byte
	binary.BigEndian.PutUint64(out[:], n)
	c.Write(out[:])
}

// benchHelloBody is what the HTTP backend and the bare HTTPS server answer.
var benchHelloBody = []byte("hello from the service behind the proxy\n")

func benchHelloHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(benchHelloBody)))
		w.Write(benchHelloBody)
	})
}

// benchServeHTTP runs an HTTP server (HTTPS when cfg is not nil) until cleanup.
func benchServeHTTP(tb testing.TB, side string, cfg *tls.Config, h http.Handler) string {
	tb.Helper()
	ln := benchListen(tb)
	hs := &http.Server{Handler: h, TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second, ErrorLog: nil}
	done := make(chan struct{})
	go func() {
		defer close(done)
		pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("side", side)))
		if cfg != nil {
			hs.ServeTLS(ln, "", "")
		} else {
			hs.Serve(ln)
		}
	}()
	tb.Cleanup(func() { hs.Close(); <-done })
	return ln.Addr().String()
}

// benchDialTLS opens a connection and completes the handshake.
func benchDialTLS(addr string, cfg *tls.Config) (*tls.Conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// benchPingPong writes one byte and reads one back. In TLS 1.3 the client's
// handshake ends before the server has checked the client's certificate;
// the echo proves that the server accepted it (and, through the proxy, that
// the target is connected).
func benchPingPong(c net.Conn) error {
	var b [1]byte
	b[0] = 'x'
	if _, err := c.Write(b[:]); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return err
	}
	return nil
}

// benchDrive runs n operations over w goroutines and returns the wall time.
func benchDrive(b *testing.B, n, w int, op func(worker int) error) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := range w {
		wg.Go(func() {
			pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("side", "client")))
			for next.Add(1) <= int64(n) {
				if err := op(i); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

// benchVersus runs b.N operations on each side, in alternating rounds, and
// returns each side's total time. It reports "other-cpu-%": the CPU that
// processes other than this one used meanwhile, as a share of the machine
// (from /proc/stat); a run with much of it was disturbed. It also reports
// this process's CPU per operation on each side ("bare-cpu-µs/op",
// "proxy-cpu-µs/op": the clients' share is in both, the proxy's target's
// in the second) and "cpu-ratio", bare's over the proxy's: on a busy
// machine it moves less than the ratio of rates.
func benchVersus(b *testing.B, base, prox func(n int) time.Duration) (tb, tp time.Duration) {
	const rounds = 4
	m0, s0, t0 := procfs.MachineBusy(), benchSelfCPU(), time.Now()
	var cb, cp time.Duration
	defer func() {
		other := (procfs.MachineBusy() - m0) - (benchSelfCPU() - s0)
		b.ReportMetric(100*max(other.Seconds(), 0)/time.Since(t0).Seconds()/float64(runtime.NumCPU()), "other-cpu-%")
		us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
		b.ReportMetric(us(cb), "bare-cpu-µs/op")
		b.ReportMetric(us(cp), "proxy-cpu-µs/op")
		b.ReportMetric(cb.Seconds()/cp.Seconds(), "cpu-ratio")
	}()
	side := func(run func(int) time.Duration, n int, wall, cpu *time.Duration) {
		c0 := benchSelfCPU()
		*wall += run(n)
		*cpu += benchSelfCPU() - c0
	}
	for i := range rounds {
		n := b.N*(i+1)/rounds - b.N*i/rounds
		if n == 0 {
			continue
		}
		if i%2 == 0 {
			side(base, n, &tb, &cb)
			side(prox, n, &tp, &cp)
		} else {
			side(prox, n, &tp, &cp)
			side(base, n, &tb, &cb)
		}
	}
	return tb, tp
}

// benchSelfCPU is this process's user and system time.
func benchSelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchTCP starts the two sides of a tcp-mode benchmark, each running
// handle on every connection: a bare crypto/tls server, and the proxy in
// tcp mode in front of a plaintext target. It returns their addresses and
// the clients' configuration.
func benchTCP(b *testing.B, handle func(net.Conn)) (bareAddr, proxyAddr string, cfg *tls.Config) {
	k := newBenchPKI(b)
	bare := benchServeConns(b, "bare", k.bareTLS(), handle)
	target := benchServeConns(b, "target", nil, handle)
	proxyAddr, _ = benchInbound(b, k, target.addr, proxy.TCP)
	return bare.addr, proxyAddr, benchClientTLS(k.client)
}

// BenchmarkInboundHandshake: new mTLS connections per second, each a full
// TLS 1.3 handshake with a client certificate and a one-byte echo, through
// the proxy (tcp mode, strict, to an echo target) and to a bare crypto/tls
// echo server with RequireAndVerifyClientCert.
func BenchmarkInboundHandshake(b *testing.B) {
	bareAddr, paddr, cfg := benchTCP(b, benchEcho)
	workers := 4 * runtime.GOMAXPROCS(0)
	run := func(addr string) func(int) time.Duration {
		return func(n int) time.Duration {
			return benchDrive(b, n, workers, func(int) error {
				c, err := benchDialTLS(addr, cfg)
				if err != nil {
					return err
				}
				defer c.Close()
				if c.ConnectionState().DidResume {
					return errors.New("session resumed: the benchmark wants full handshakes")
				}
				return benchPingPong(c)
			})
		}
	}
	b.ResetTimer()
	tb, tp := benchVersus(b, run(bareAddr), run(paddr))
	b.StopTimer()
	bareRate, proxyRate := float64(b.N)/tb.Seconds(), float64(b.N)/tp.Seconds()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(bareRate, "bare-handshakes/s")
	b.ReportMetric(proxyRate, "proxy-handshakes/s")
	b.ReportMetric(proxyRate/bareRate, "ratio")
}

// benchKeepAliveMsg is one request of BenchmarkInboundTCPKeepAlive: the
// size of a small HTTP request.
const benchKeepAliveMsg = 100

// BenchmarkInboundTCPKeepAlive: request-response exchanges per second on
// open connections (16, each one exchange at a time: 100 bytes written,
// the same 100 read back), through the proxy (tcp mode, to an echo
// target) and to a bare crypto/tls echo server: what bench/run.sh's
// keep-alive test asks of the tcp mode, without HTTP.
func BenchmarkInboundTCPKeepAlive(b *testing.B) {
	bareAddr, paddr, cfg := benchTCP(b, benchEcho)
	open := func(addr string) []net.Conn {
		conns := make([]net.Conn, benchHTTPConcurrency)
		for i := range conns {
			c, err := benchDialTLS(addr, cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { c.Close() })
			conns[i] = c
		}
		return conns
	}
	bc, pc := open(bareAddr), open(paddr)
	run := func(conns []net.Conn) func(int) time.Duration {
		bufs := make([][]byte, len(conns))
		for i := range bufs {
			bufs[i] = make([]byte, benchKeepAliveMsg)
		}
		return func(n int) time.Duration {
			return benchDrive(b, n, len(conns), func(w int) error {
				if _, err := conns[w].Write(bufs[w]); err != nil {
					return err
				}
				_, err := io.ReadFull(conns[w], bufs[w])
				return err
			})
		}
	}
	b.ResetTimer()
	tb, tp := benchVersus(b, run(bc), run(pc))
	b.StopTimer()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(b.N)/tb.Seconds(), "bare-req/s")
	b.ReportMetric(float64(b.N)/tp.Seconds(), "proxy-req/s")
	b.ReportMetric(tb.Seconds()/tp.Seconds(), "ratio")
}

const benchBulkChunk = 1 << 20

// BenchmarkInboundThroughput: one connection's bulk upload, through the
// proxy (tcp mode) to a sink target and to a bare crypto/tls sink. One op is
// 1 MiB on each side; the handshake is outside the timed part.
func BenchmarkInboundThroughput(b *testing.B) {
	bareAddr, paddr, cfg := benchTCP(b, benchSink)
	chunk := make([]byte, benchBulkChunk)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	run := func(addr string) func(int) time.Duration {
		return func(n int) time.Duration {
			c, err := benchDialTLS(addr, cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			for range n {
				if _, err := c.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			if err := c.CloseWrite(); err != nil {
				b.Fatal(err)
			}
			var got [8]byte
			if _, err := io.ReadFull(c, got[:]); err != nil {
				b.Fatal(err)
			}
			d := time.Since(start)
			if want := uint64(n) * benchBulkChunk; binary.BigEndian.Uint64(got[:]) != want {
				b.Fatalf("sink got %d bytes, want %d", binary.BigEndian.Uint64(got[:]), want)
			}
			return d
		}
	}
	b.ResetTimer()
	tb, tp := benchVersus(b, run(bareAddr), run(paddr))
	b.StopTimer()
	mb := float64(b.N) * benchBulkChunk / 1e6
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(mb/tb.Seconds(), "bare-MB/s")
	b.ReportMetric(mb/tp.Seconds(), "proxy-MB/s")
	b.ReportMetric(tb.Seconds()/tp.Seconds(), "ratio")
}

// benchHTTPConn is a keep-alive HTTP/1.1 client on one TLS connection.
type benchHTTPConn struct {
	c *tls.Conn
	r *bufio.Reader
}

var benchHelloRequest = []byte("GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: mutual-bench\r\n\r\n")

func (h *benchHTTPConn) get() error {
	if _, err := h.c.Write(benchHelloRequest); err != nil {
		return err
	}
	resp, err := http.ReadResponse(h.r, nil)
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || n != int64(len(benchHelloBody)) {
		return fmt.Errorf("GET /hello: %s, %d bytes", resp.Status, n)
	}
	return nil
}

func benchDialHTTP(addr string, cfg *tls.Config) (*benchHTTPConn, error) {
	c, err := benchDialTLS(addr, cfg)
	if err != nil {
		return nil, err
	}
	return &benchHTTPConn{c: c, r: bufio.NewReader(c)}, nil
}

// benchPercentile returns the p-th percentile (0..100) of sorted durations.
func benchPercentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

const benchHTTPConcurrency = 16

// BenchmarkInboundHTTP: keep-alive requests per second and their latency at
// a fixed concurrency (16 connections, each one request at a time), through
// the proxy in http mode to a plaintext Go backend, and to a bare Go HTTPS
// server (RequireAndVerifyClientCert) with the same handler.
func BenchmarkInboundHTTP(b *testing.B) {
	k := newBenchPKI(b)
	bareAddr := benchServeHTTP(b, "bare", k.bareTLS(), benchHelloHandler())
	backend := benchServeHTTP(b, "target", nil, benchHelloHandler())
	paddr, _ := benchInbound(b, k, backend, proxy.HTTP)
	cfg := benchClientTLS(k.client)
	type side struct {
		conns []*benchHTTPConn
		lat   [][]time.Duration
	}
	open := func(addr string) *side {
		s := &side{lat: make([][]time.Duration, benchHTTPConcurrency)}
		for range benchHTTPConcurrency {
			h, err := benchDialHTTP(addr, cfg)
			if err != nil {
				b.Fatal(err)
			}
			if err := h.get(); err != nil { // warm: the proxy's backend pool fills
				b.Fatal(err)
			}
			s.conns = append(s.conns, h)
		}
		b.Cleanup(func() {
			for _, h := range s.conns {
				h.c.Close()
			}
		})
		return s
	}
	bs, ps := open(bareAddr), open(paddr)
	run := func(s *side) func(int) time.Duration {
		return func(n int) time.Duration {
			return benchDrive(b, n, benchHTTPConcurrency, func(w int) error {
				t := time.Now()
				err := s.conns[w].get()
				s.lat[w] = append(s.lat[w], time.Since(t))
				return err
			})
		}
	}
	b.ResetTimer()
	tb, tp := benchVersus(b, run(bs), run(ps))
	b.StopTimer()
	all := func(s *side) []time.Duration {
		out := slices.Concat(s.lat...)
		slices.Sort(out)
		return out
	}
	bl, pl := all(bs), all(ps)
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(b.N)/tb.Seconds(), "bare-req/s")
	b.ReportMetric(float64(b.N)/tp.Seconds(), "proxy-req/s")
	b.ReportMetric(tb.Seconds()/tp.Seconds(), "ratio")
	b.ReportMetric(ms(benchPercentile(bl, 50)), "bare-p50-ms")
	b.ReportMetric(ms(benchPercentile(bl, 99)), "bare-p99-ms")
	b.ReportMetric(ms(benchPercentile(pl, 50)), "proxy-p50-ms")
	b.ReportMetric(ms(benchPercentile(pl, 99)), "proxy-p99-ms")
	b.ReportMetric(float64(benchPercentile(pl, 99))/float64(benchPercentile(bl, 99)), "p99-ratio")
}

// benchIdleConns is how many idle connections BenchmarkIdleConnMemory holds.
const benchIdleConns = 1000

var benchIdleProfile = flag.String("bench.idleprofile", "",
	"BenchmarkIdleConnMemory writes a heap profile to `PREFIX`-SERVER.pprof while each server holds its idle connections")

// BenchmarkIdleConnMemory: Go heap in use plus goroutine stacks, after
// garbage collection, per idle mTLS connection that has carried one request
// (tcp mode: a one-byte echo; http mode: GET /hello), in the proxy and in
// bare crypto/tls servers. The clients and the proxy's targets run in a
// child process, so only the servers' memory is in the delta. One
// measurement per call: run it with -benchtime 1x.
func BenchmarkIdleConnMemory(b *testing.B) {
	k := newBenchPKI(b)
	child := benchStartIdleClients(b, k.clientDir)
	tcpTarget, httpTarget := child.targets[0], child.targets[1]
	type server struct {
		name   string
		start  func() (addr string, active func() int64)
		result float64
	}
	servers := []*server{
		{name: "bare-tcp", start: func() (string, func() int64) {
			s := benchServeConns(b, "bare", k.bareTLS(), benchEcho)
			return s.addr, s.active.Load
		}},
		{name: "proxy-tcp", start: func() (string, func() int64) {
			a, p := benchInbound(b, k, tcpTarget, proxy.TCP)
			return a, p.Active
		}},
		{name: "bare-http", start: func() (string, func() int64) {
			var active atomic.Int64
			ln := benchListen(b)
			hs := &http.Server{Handler: benchHelloHandler(), TLSConfig: k.bareTLS(), ConnState: func(_ net.Conn, st http.ConnState) {
				switch st {
				case http.StateNew:
					active.Add(1)
				case http.StateClosed, http.StateHijacked:
					active.Add(-1)
				}
			}}
			go hs.ServeTLS(ln, "", "")
			b.Cleanup(func() { hs.Close() })
			return ln.Addr().String(), active.Load
		}},
		{name: "proxy-http", start: func() (string, func() int64) {
			a, p := benchInbound(b, k, httpTarget, proxy.HTTP)
			return a, p.Active
		}},
	}
	for _, s := range servers {
		addr, active := s.start()
		proto := "tcp"
		if strings.HasSuffix(s.name, "http") {
			proto = "http"
		}
		// Warm up once, so that one-time allocations (the certificate cache,
		// the backend transport, metric series) are not charged to the conns.
		child.do(b, fmt.Sprintf("open %s %s 8", proto, addr), "opened")
		child.do(b, "close", "closed")
		benchWaitZero(b, active)
		h0, s0, g0 := benchHeapAndStacks()
		child.do(b, fmt.Sprintf("open %s %s %d", proto, addr, benchIdleConns), "opened")
		// Let every server goroutine block in its read, and the proxy's tcp
		// relays park.
		time.Sleep(proxy.ParkDelay() + 300*time.Millisecond)
		if n := active(); n != benchIdleConns {
			b.Fatalf("%s: %d connections open, want %d", s.name, n, benchIdleConns)
		}
		h1, s1, g1 := benchHeapAndStacks()
		if *benchIdleProfile != "" {
			f, err := os.Create(*benchIdleProfile + "-" + s.name + ".pprof")
			if err != nil {
				b.Fatal(err)
			}
			pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
		perConn := func(a, b uint64) float64 { return float64(int64(b)-int64(a)) / benchIdleConns }
		s.result = perConn(h0, h1) + perConn(s0, s1)
		b.Logf("%s: %+.0f bytes/conn (heap %+.0f, stacks %+.0f), %+.2f goroutines/conn",
			s.name, s.result, perConn(h0, h1), perConn(s0, s1), float64(g1-g0)/benchIdleConns)
		child.do(b, "close", "closed")
		benchWaitZero(b, active)
	}
	b.ReportMetric(0, "ns/op")
	for _, s := range servers {
		b.ReportMetric(s.result, s.name+"-bytes/conn")
	}
	b.ReportMetric(servers[1].result/servers[0].result, "tcp-ratio")
	b.ReportMetric(servers[3].result/servers[2].result, "http-ratio")
}

// benchHeapAndStacks returns HeapInuse+StackInuse after garbage collection
// (repeated: each cycle halves the stacks of goroutines using under a
// quarter of theirs, as a long-lived process's stacks settle) and the
// number of goroutines.
func benchHeapAndStacks() (heap, stacks uint64, goroutines int) {
	for range 4 {
		runtime.GC()
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse, m.StackInuse, runtime.NumGoroutine()
}

func benchWaitZero(b *testing.B, active func() int64) {
	testwait.Eventually(b, func() bool { return active() == 0 }, "every connection to close after the clients closed")
}

// benchIdleClients talks to the child process running TestBenchIdleClients.
type benchIdleClients struct {
	in      io.Writer
	out     *bufio.Scanner
	targets []string
}

const benchIdleClientsEnv = "MUTUAL_PROXY_BENCH_CLIENT_DIR"

func benchStartIdleClients(b *testing.B, clientDir string) *benchIdleClients {
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchIdleClients$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), benchIdleClientsEnv+"="+clientDir)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { in.Close(); cmd.Wait() })
	c := &benchIdleClients{in: in, out: bufio.NewScanner(out)}
	c.targets = strings.Fields(c.read(b, "targets"))
	if len(c.targets) != 2 {
		b.Fatalf("child: targets %q", c.targets)
	}
	return c
}

// read returns the rest of the next line from the child that starts with
// "bench: word".
func (c *benchIdleClients) read(b *testing.B, word string) string {
	for c.out.Scan() {
		rest, ok := strings.CutPrefix(c.out.Text(), "bench: ")
		if !ok {
			continue
		}
		if rest, ok := strings.CutPrefix(rest, word); ok {
			return strings.TrimSpace(rest)
		}
		b.Fatalf("child: %s (waiting for %q)", rest, word)
	}
	b.Fatalf("child exited (waiting for %q): %v", word, c.out.Err())
	return ""
}

func (c *benchIdleClients) do(b *testing.B, cmd, want string) {
	fmt.Fprintln(c.in, cmd)
	c.read(b, want)
}

// TestBenchIdleClients is the child process of BenchmarkIdleConnMemory: it
// runs the proxy's targets (a tcp echo and an HTTP backend) and the mTLS
// clients, driven by commands on stdin. Without its environment variable it
// does nothing.
func TestBenchIdleClients(t *testing.T) {
	dir := os.Getenv(benchIdleClientsEnv)
	if dir == "" {
		t.Skip("helper process of BenchmarkIdleConnMemory")
	}
	id, err := identity.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := benchClientTLS(id)
	tcpTarget := benchServeConns(t, "target", nil, benchEcho)
	httpTarget := benchServeHTTP(t, "target", nil, benchHelloHandler())
	fmt.Printf("bench: targets %s %s\n", tcpTarget.addr, httpTarget)
	var held []net.Conn
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch {
		case len(f) == 4 && f[0] == "open":
			n, _ := strconv.Atoi(f[3])
			conns, err := benchOpenIdle(f[1], f[2], n, cfg)
			if err != nil {
				fmt.Printf("bench: error %v\n", err)
				continue
			}
			held = append(held, conns...)
			fmt.Println("bench: opened")
		case len(f) == 1 && f[0] == "close":
			for _, c := range held {
				c.Close()
			}
			held = nil
			fmt.Println("bench: closed")
		default:
			fmt.Printf("bench: error unknown command %q\n", in.Text())
		}
	}
}

// benchOpenIdle opens n connections to addr, 8 at a time, each carrying one
// exchange (a byte echoed, or GET /hello), and returns them open.
func benchOpenIdle(proto, addr string, n int, cfg *tls.Config) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for w := range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if proto == "http" {
					h, err := benchDialHTTP(addr, cfg)
					if err == nil {
						err = h.get()
						conns[i] = h.c
					}
					if err != nil {
						errs[w] = err
						return
					}
					continue
				}
				c, err := benchDialTLS(addr, cfg)
				if err == nil {
					err = benchPingPong(c)
					conns[i] = c
				}
				if err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		return nil, err
	}
	return conns, nil
}

// BenchmarkInboundHTTPAllocs: one keep-alive request at a time through the
// proxy in http mode, with -benchmem's allocations and bytes per request
// (client, proxy and backend together; only the proxy's share changes
// between versions of the proxy). CPU-independent, unlike the rates above.
func BenchmarkInboundHTTPAllocs(b *testing.B) {
	k := newBenchPKI(b)
	backend := benchServeHTTP(b, "target", nil, benchHelloHandler())
	paddr, _ := benchInbound(b, k, backend, proxy.HTTP)
	h, err := benchDialHTTP(paddr, benchClientTLS(k.client))
	if err != nil {
		b.Fatal(err)
	}
	defer h.c.Close()
	if err := h.get(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := h.get(); err != nil {
			b.Fatal(err)
		}
	}
}
