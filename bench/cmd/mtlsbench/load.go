package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/procfs"
)

// clientConfig is the load's TLS configuration, the same against every
// server: TLS 1.3, the client certificate, the server's chain and IP
// verified, and no session cache, so that every connection is a full
// handshake. curves, when not empty, limits the key exchange (nginx's
// OpenSSL 3.0 has no X25519MLKEM768, Go's default first choice).
func clientConfig(id *identity.Identity, curves []tls.CurveID) *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{id.TLSCertificate()},
		RootCAs:          id.RootPool(),
		ServerName:       "127.0.0.1",
		CurvePreferences: curves,
	}
}

var (
	reqHello      = []byte("GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: mtlsbench\r\n\r\n")
	reqHelloClose = []byte("GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: mtlsbench\r\nConnection: close\r\n\r\n")
)

// conn is a keep-alive HTTP/1.1 client on one mutual TLS connection.
type conn struct {
	tc *tls.Conn
	r  *bufio.Reader
}

func dial(addr string, cfg *tls.Config) (*conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, cfg)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	if tc.ConnectionState().DidResume {
		c.Close()
		return nil, errors.New("a session was resumed; the benchmark wants full handshakes")
	}
	tc.SetDeadline(time.Time{})
	return &conn{tc: tc, r: bufio.NewReader(tc)}, nil
}

// get sends req and reads the response to GET /hello.
func (c *conn) get(req []byte) error {
	c.tc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.tc.Write(req); err != nil {
		return err
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || n != int64(len(helloBody)) {
		return fmt.Errorf("GET /hello: %s, %d bytes", resp.Status, n)
	}
	return nil
}

func (c *conn) Close() error { return c.tc.Close() }

// probe reads the CPU time of the server under test and of everything the
// run started (itself included), to tell the server's cost and the load
// other programs put on the machine meanwhile.
type probe struct {
	server func() []int
	ours   func() []int
}

// window is a probe's reading at the start of a measurement.
type window struct {
	server, ours, machine time.Duration
	start                 time.Time
}

func (p probe) begin() window {
	return window{server: procfs.CPUTime(p.server()...), ours: procfs.CPUTime(p.ours()...), machine: procfs.MachineBusy(), start: time.Now()}
}

// end returns the wall time, the server's CPU time, and the CPU time of
// processes the run did not start.
func (p probe) end(w window) (elapsed, server, others time.Duration) {
	elapsed = time.Since(w.start)
	server = procfs.CPUTime(p.server()...) - w.server
	others = (procfs.MachineBusy() - w.machine) - (procfs.CPUTime(p.ours()...) - w.ours)
	return elapsed, server, max(others, 0)
}

// rate is the result of a timed run at fixed concurrency.
type rate struct {
	ops, errs int
	elapsed   time.Duration
	cpu       time.Duration // the server processes' CPU time in the window
	others    time.Duration // CPU time of processes outside the run
	lat       []time.Duration
	firstErr  error
}

func (r rate) perSecond() float64 { return float64(r.ops) / r.elapsed.Seconds() }

// cpuPerOp is the servers' CPU time per operation, in microseconds.
func (r rate) cpuPerOp() float64 {
	if r.ops == 0 {
		return 0
	}
	return float64(r.cpu.Microseconds()) / float64(r.ops)
}

// noise is the CPU time used by other programs over the window, as a share
// of the whole machine.
func (r rate) noise() float64 {
	return r.others.Seconds() / r.elapsed.Seconds() / float64(machineCPUs())
}

// busy is the servers' CPU time over the window, as a share of ncpu CPUs.
func (r rate) busy(ncpu int) float64 { return r.cpu.Seconds() / r.elapsed.Seconds() / float64(ncpu) }

func (r rate) percentile(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[int(float64(len(r.lat)-1)*p/100)]
}

// timed runs op on conc workers: warm first (not counted), then measured
// for dur, recording each operation's latency. Workers keep state (their
// connection) in the value init returns.
func timed[S any](ctx context.Context, conc int, warm, dur time.Duration, pr probe,
	init func() S, op func(*S) error, finish func(*S)) rate {
	const (
		warming = iota
		measuring
		stopping
	)
	var phase atomic.Int32
	var mu sync.Mutex
	var out rate
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			s := init()
			var lat []time.Duration
			ops, errs := 0, 0
			var firstErr error
			for {
				p0 := phase.Load()
				if p0 == stopping || ctx.Err() != nil {
					break
				}
				t := time.Now()
				err := op(&s)
				d := time.Since(t)
				if p0 == measuring && phase.Load() == measuring {
					if err != nil {
						errs++
						if firstErr == nil {
							firstErr = err
						}
					} else {
						ops++
						lat = append(lat, d)
					}
				}
				if err != nil {
					time.Sleep(10 * time.Millisecond)
				}
			}
			finish(&s)
			mu.Lock()
			out.ops += ops
			out.errs += errs
			out.lat = append(out.lat, lat...)
			if out.firstErr == nil {
				out.firstErr = firstErr
			}
			mu.Unlock()
		})
	}
	sleep(ctx, warm)
	w := pr.begin()
	phase.Store(measuring)
	sleep(ctx, dur)
	phase.Store(stopping)
	out.elapsed, out.cpu, out.others = pr.end(w)
	wg.Wait()
	slices.Sort(out.lat)
	return out
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// handshakes measures new connections per second: each a full handshake,
// one GET /hello with Connection: close, and a close.
func handshakes(ctx context.Context, addr string, cfg *tls.Config, conc int, dur time.Duration, pr probe) rate {
	return timed(ctx, conc, dur/5, dur, pr, func() struct{} { return struct{}{} }, func(*struct{}) error {
		c, err := dial(addr, cfg)
		if err != nil {
			return err
		}
		defer c.Close()
		return c.get(reqHelloClose)
	}, func(*struct{}) {})
}

// keepAlive measures requests per second and their latency on conc
// keep-alive connections, each with one request in flight.
func keepAlive(ctx context.Context, addr string, cfg *tls.Config, conc int, dur time.Duration, pr probe) rate {
	return timed(ctx, conc, time.Second, dur, pr, func() *conn { return nil }, func(c **conn) error {
		if *c == nil {
			nc, err := dial(addr, cfg)
			if err != nil {
				return err
			}
			*c = nc
		}
		if err := (*c).get(reqHello); err != nil {
			(*c).Close()
			*c = nil
			return err
		}
		return nil
	}, func(c **conn) {
		if *c != nil {
			(*c).Close()
		}
	})
}

// bulkResult is one connection's upload.
type bulkResult struct {
	mbps        float64
	elapsed     time.Duration
	cpu, others time.Duration
	n           int64
}

// bulk uploads size bytes in one POST /sink on one connection and returns
// the throughput, counted from the first byte sent to the response.
func bulk(addr string, cfg *tls.Config, size int64, pr probe) (bulkResult, error) {
	c, err := dial(addr, cfg)
	if err != nil {
		return bulkResult{}, err
	}
	defer c.Close()
	buf := make([]byte, 256<<10)
	for i := range buf {
		buf[i] = byte(i)
	}
	w := pr.begin()
	c.tc.SetDeadline(time.Now().Add(5 * time.Minute))
	if _, err := fmt.Fprintf(c.tc, "POST /sink HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", size); err != nil {
		return bulkResult{}, err
	}
	for left := size; left > 0; {
		k := min(left, int64(len(buf)))
		if _, err := c.tc.Write(buf[:k]); err != nil {
			return bulkResult{}, err
		}
		left -= k
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return bulkResult{}, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return bulkResult{}, err
	}
	d, cpu, others := pr.end(w)
	got, _ := strconv.ParseInt(strings.TrimSpace(string(body)), 10, 64)
	if resp.StatusCode != http.StatusOK || got != size {
		return bulkResult{}, fmt.Errorf("POST /sink: %s, the service read %d bytes of %d", resp.Status, got, size)
	}
	return bulkResult{mbps: float64(size) / 1e6 / d.Seconds(), elapsed: d, cpu: cpu, others: others, n: size}, nil
}

// openIdle opens n connections, 8 at a time, each carrying one keep-alive
// GET /hello, and returns them open.
func openIdle(ctx context.Context, addr string, cfg *tls.Config, n int) ([]*conn, error) {
	conns := make([]*conn, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for w := range errs {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, err := dial(addr, cfg)
				if err == nil {
					conns[i] = c
					err = c.get(reqHello)
				}
				if err != nil {
					errs[w] = fmt.Errorf("connection %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	err := errors.Join(errs...)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		closeAll(conns)
		return nil, err
	}
	return conns, nil
}

func closeAll(conns []*conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// fixedRate sends requests at a fixed total rate (open loop) spread over
// conc keep-alive connections, and measures each request's latency from
// the moment it was due, so that a server falling behind is charged for
// the queue it builds (no coordinated omission).
func fixedRate(ctx context.Context, addr string, cfg *tls.Config, conc int, perSecond float64, dur time.Duration, pr probe) rate {
	interval := time.Duration(float64(conc) / perSecond * float64(time.Second))
	warm := time.Second
	start := time.Now().Add(50 * time.Millisecond)
	measureFrom, stopAt := start.Add(warm), start.Add(warm+dur)
	var mu sync.Mutex
	var out rate
	var wg sync.WaitGroup
	begun := make(chan window, 1)
	time.AfterFunc(time.Until(measureFrom), func() { begun <- pr.begin() })
	for i := range conc {
		wg.Go(func() {
			var c *conn
			defer func() {
				if c != nil {
					c.Close()
				}
			}()
			var lat []time.Duration
			ops, errs := 0, 0
			var firstErr error
			for due := start.Add(interval * time.Duration(i) / time.Duration(conc)); due.Before(stopAt) && ctx.Err() == nil; due = due.Add(interval) {
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				}
				var err error
				if c == nil {
					c, err = dial(addr, cfg)
				}
				if err == nil {
					if err = c.get(reqHello); err != nil {
						c.Close()
						c = nil
					}
				}
				if due.Before(measureFrom) {
					continue
				}
				if err != nil {
					errs++
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				ops++
				lat = append(lat, time.Since(due))
			}
			mu.Lock()
			out.ops += ops
			out.errs += errs
			out.lat = append(out.lat, lat...)
			if out.firstErr == nil {
				out.firstErr = firstErr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	out.elapsed, out.cpu, out.others = pr.end(<-begun)
	slices.Sort(out.lat)
	return out
}
