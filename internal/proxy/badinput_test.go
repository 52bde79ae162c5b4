package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// closedByProxy reports whether the proxy ends c (EOF or reset) before the
// safety net, draining anything it sends first.
func closedByProxy(c net.Conn) error {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errors.New("the proxy kept the connection open")
	}
	return nil
}

// clientHelloPrefix returns the first n bytes a real TLS client sends.
func clientHelloPrefix(t *testing.T, n int) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go tls.Client(a, &tls.Config{ServerName: "x"}).Handshake()
	buf := make([]byte, n)
	if _, err := io.ReadFull(b, buf); err != nil {
		t.Fatal(err)
	}
	return buf
}

// TestInboundGarbage: bytes that are not a TLS ClientHello are refused (or,
// in permissive mode, relayed as plaintext when they do not look like TLS),
// and the proxy goes on serving others.
func TestInboundGarbage(t *testing.T) {
	w := newWorld(t)
	client := w.ca.Leaf(t, webID)
	echo, web := testnet.Echo(t), httpBackend(t)
	hello := clientHelloPrefix(t, 64)
	inputs := []struct {
		name string
		data []byte
	}{
		{"random", []byte("\x8f\x00\xfe\xdd garbage garbage garbage \x00\x01\x02\xff\xfe")},
		{"SSLv2 hello", []byte{0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10}},
		{"http request", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"handshake record, bogus body", []byte("\x16\x03\x01\x00\x05hello")},
		{"handshake record, huge length", []byte("\x16\x03\x01\xff\xff\x01\x00")},
		{"handshake record, zero length", []byte("\x16\x03\x01\x00\x00")},
		{"alert record", []byte("\x15\x03\x03\x00\x02\x02\x28")},
		{"client hello, corrupted", append(append([]byte{}, hello[:20]...), bytes.Repeat([]byte{0xff}, 200)...)},
		{"truncated client hello", hello[:30]},
		{"one byte", []byte{0x16}},
	}
	for _, protocol := range []proxy.Protocol{proxy.TCP, proxy.HTTP} {
		for _, mode := range []proxy.Mode{proxy.Strict, proxy.Permissive} {
			t.Run(fmt.Sprintf("%s/%s", protocol, mode), func(t *testing.T) {
				target := echo
				if protocol == proxy.HTTP {
					target = web
				}
				r := runInbound(t, w, proxy.InboundConfig{Target: target, Mode: mode, Protocol: protocol,
					Limits: proxy.Limits{HandshakeTimeout: 2 * time.Second}})
				for _, in := range inputs {
					c, err := net.Dial("tcp", r.addr)
					if err != nil {
						t.Fatal(err)
					}
					c.Write(in.data)
					// End our side: a relay (permissive plaintext) then ends
					// too, and a handshake waiting for more bytes sees EOF.
					c.(*net.TCPConn).CloseWrite()
					if err := closedByProxy(c); err != nil {
						t.Errorf("%s: %v", in.name, err)
					}
					c.Close()
					// The proxy still serves a good client.
					if protocol == proxy.TCP {
						if got, err := testnet.RoundTrip(r.addr, w.clientTLS(client), "ok"); err != nil || got != "ok" {
							t.Fatalf("after %s: round trip = %q, %v", in.name, got, err)
						}
					} else {
						if res := getOnce(w.clientTLS(client), "https://"+r.addr+"/"); res.err != nil || res.code != 200 {
							t.Fatalf("after %s: request = %d, %v", in.name, res.code, res.err)
						}
					}
				}
				testwait.Eventually(t, func() bool { return r.p.Active() == 0 }, "connections released")
				if n := metricValue(t, r.reg, "mutual_proxy_handshakes_total", map[string]string{"outcome": "refused"}); n == 0 {
					t.Error("no refused handshake counted")
				}
			})
		}
	}
}

// TestInboundSlowHandshake: a client that never finishes the handshake is
// cut at the handshake timeout; others are served meanwhile.
func TestInboundSlowHandshake(t *testing.T) {
	w := newWorld(t)
	client := w.ca.Leaf(t, webID)
	echo, web := testnet.Echo(t), httpBackend(t)
	hello := clientHelloPrefix(t, 40)
	for _, protocol := range []proxy.Protocol{proxy.TCP, proxy.HTTP} {
		for _, mode := range []proxy.Mode{proxy.Strict, proxy.Permissive} {
			t.Run(fmt.Sprintf("%s/%s", protocol, mode), func(t *testing.T) {
				target := echo
				if protocol == proxy.HTTP {
					target = web
				}
				r := runInbound(t, w, proxy.InboundConfig{Target: target, Mode: mode, Protocol: protocol,
					Limits: proxy.Limits{HandshakeTimeout: 300 * time.Millisecond}})
				var slow []net.Conn
				for _, first := range [][]byte{nil, hello} { // silent, and a partial ClientHello
					c, err := net.Dial("tcp", r.addr)
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					c.Write(first)
					slow = append(slow, c)
				}
				// Served while the slow ones hang.
				if protocol == proxy.TCP {
					if got, err := testnet.RoundTrip(r.addr, w.clientTLS(client), "ok"); err != nil || got != "ok" {
						t.Fatalf("round trip = %q, %v", got, err)
					}
				} else if res := getOnce(w.clientTLS(client), "https://"+r.addr+"/"); res.err != nil || res.code != 200 {
					t.Fatalf("request = %d, %v", res.code, res.err)
				}
				for i, c := range slow {
					if err := closedByProxy(c); err != nil {
						t.Errorf("slow client %d: %v", i, err)
					}
				}
				labels := map[string]string{"reason": "handshake timeout"}
				testwait.Eventually(t, func() bool { return metricValue(t, r.reg, "mutual_proxy_handshake_refusals_total", labels) == 2 }, "timeouts counted")
				if !r.logs.Has("handshake refused", map[string]any{"reason": "handshake timeout"}) {
					t.Errorf("no timeout logged:\n%s", r.logs)
				}
				testwait.Eventually(t, func() bool { return r.p.Active() == 0 }, "connections released")
			})
		}
	}
}

// TestInboundMaxConnections: past the limit a connection is closed at
// once, counted and logged; closing one makes room.
func TestInboundMaxConnections(t *testing.T) {
	w := newWorld(t)
	client := w.ca.Leaf(t, webID)
	for _, protocol := range []proxy.Protocol{proxy.TCP, proxy.HTTP} {
		t.Run(string(protocol), func(t *testing.T) {
			target := backendFor(t, protocol)
			r := runInbound(t, w, proxy.InboundConfig{Target: target, Protocol: protocol, Limits: proxy.Limits{MaxConnections: 3}})
			open := func() (*rawConn, error) {
				c, err := tls.Dial("tcp", r.addr, w.clientTLS(client, "http/1.1"))
				if err != nil {
					return nil, err
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				rc := &rawConn{Conn: c, br: bufio.NewReader(c)}
				if err := ping(rc, protocol); err != nil {
					c.Close()
					return nil, err
				}
				return rc, nil
			}
			var live []*rawConn
			for i := range 3 {
				c, err := open()
				if err != nil {
					t.Fatalf("connection %d: %v", i+1, err)
				}
				defer c.Close()
				live = append(live, c)
			}
			if c, err := open(); err == nil {
				c.Close()
				t.Fatal("a 4th connection was served past MaxConnections 3")
			}
			testwait.Eventually(t, func() bool {
				return metricValue(t, r.reg, "mutual_proxy_connections_total", map[string]string{"outcome": "refused_limit"}) == 1 &&
					r.logs.Has("connection refused", map[string]any{"reason": "connection limit", "limit": 3.0})
			}, "refused_limit counted and logged")
			if r.p.Active() != 3 || metricValue(t, r.reg, "mutual_proxy_active_connections", nil) != 3 {
				t.Errorf("active = %d (gauge %v), want 3", r.p.Active(), metricValue(t, r.reg, "mutual_proxy_active_connections", nil))
			}
			// The live ones are unaffected.
			for i, c := range live {
				if err := ping(c, protocol); err != nil {
					t.Errorf("live connection %d: %v", i+1, err)
				}
			}
			live[0].Close()
			testwait.Eventually(t, func() bool { return r.p.Active() == 2 }, "room made")
			c, err := open()
			if err != nil {
				t.Fatalf("after closing one: %v", err)
			}
			c.Close()
		})
	}
}

// TestInboundShutdownTCP: cancelling the context stops accepting, lets a
// live connection finish, and Serve returns when it has.
func TestInboundShutdownTCP(t *testing.T) {
	w := newWorld(t)
	r := runInbound(t, w, proxy.InboundConfig{Target: testnet.Echo(t), Limits: proxy.Limits{DrainTimeout: time.Minute}})
	c, err := tls.Dial("tcp", r.addr, w.clientTLS(w.ca.Leaf(t, webID)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	rc := &rawConn{Conn: c, br: bufio.NewReader(c)}
	if err := ping(rc, proxy.TCP); err != nil {
		t.Fatal(err)
	}
	r.beginStop(t)
	r.stillServing(t, "while a connection was live")
	if err := ping(rc, proxy.TCP); err != nil {
		t.Fatalf("the live connection broke at shutdown: %v", err)
	}
	c.Close()
	r.returned(t, "after the last connection ended")
}

// TestInboundShutdownDrainTimeout: a connection that does not end is cut
// at DrainTimeout, and Serve returns.
func TestInboundShutdownDrainTimeout(t *testing.T) {
	w := newWorld(t)
	for _, protocol := range []proxy.Protocol{proxy.TCP, proxy.HTTP} {
		t.Run(string(protocol), func(t *testing.T) {
			target := backendFor(t, protocol)
			r := runInbound(t, w, proxy.InboundConfig{Target: target, Protocol: protocol, Limits: proxy.Limits{DrainTimeout: 300 * time.Millisecond}})
			c, err := tls.Dial("tcp", r.addr, w.clientTLS(w.ca.Leaf(t, webID), "http/1.1"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			rc := &rawConn{Conn: c, br: bufio.NewReader(c)}
			c.SetDeadline(time.Now().Add(30 * time.Second))
			if err := ping(rc, protocol); err != nil {
				t.Fatal(err)
			}
			if protocol == proxy.HTTP {
				// Half a request: the connection is active, not idle.
				io.WriteString(c, "GET / HTTP/1.1\r\n")
			}
			if err := r.stop(t); err != nil {
				t.Errorf("Serve = %v", err)
			}
			if err := closedByProxy(c); err != nil {
				t.Errorf("after the drain timeout: %v", err)
			}
		})
	}
}

// TestInboundShutdownHTTP: an in-flight request completes during the drain;
// Serve returns when it has.
func TestInboundShutdownHTTP(t *testing.T) {
	w := newWorld(t)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	backend := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		once.Do(func() { close(entered) })
		<-release
		io.WriteString(rw, "finished")
	}))
	defer backend.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	r := runInbound(t, w, proxy.InboundConfig{Target: backend.Listener.Addr().String(), Protocol: proxy.HTTP, Limits: proxy.Limits{DrainTimeout: time.Minute}})
	c := httpClient(t, w.clientTLS(w.ca.Leaf(t, webID)))
	got := make(chan result, 1)
	go func() { got <- doRequest(c, "GET", "https://"+r.addr+"/slow", nil) }()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach the backend")
	}
	r.beginStop(t)
	r.stillServing(t, "with a request in flight")
	close(release)
	res := <-got
	if res.err != nil || res.code != 200 || res.body != "finished" {
		t.Errorf("in-flight request = %d %q, %v", res.code, res.body, res.err)
	}
	r.returned(t, "after the request completed")
}

// TestInboundShutdownReturnsNil: Serve ends without an error when its
// context is cancelled, in both protocols, every time, even when the
// cancellation comes first (a SIGTERM during start-up).
func TestInboundShutdownReturnsNil(t *testing.T) {
	w := newWorld(t)
	for _, tt := range []struct {
		protocol proxy.Protocol
		early    bool
	}{{proxy.TCP, false}, {proxy.TCP, true}, {proxy.HTTP, false}, {proxy.HTTP, true}} {
		protocol := tt.protocol
		t.Run(fmt.Sprintf("%s/cancelled-before-serve=%v", protocol, tt.early), func(t *testing.T) {
			var failures int
			var last error
			const runs = 40
			for range runs {
				p, err := proxy.NewInbound(proxy.InboundConfig{Target: "127.0.0.1:1", SVID: w.src, Bundle: w.src, Policy: w.policy, Protocol: protocol})
				if err != nil {
					t.Fatal(err)
				}
				ln := testnet.Listen(t)
				ctx, cancel := context.WithCancel(context.Background())
				if tt.early {
					cancel()
				}
				done := make(chan error, 1)
				go func() { done <- p.Serve(ctx, ln) }()
				// A connection makes sure Serve is accepting before the cancel.
				if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
					c.Close()
				}
				cancel()
				select {
				case err := <-done:
					if err != nil {
						failures++
						last = err
					}
				case <-time.After(30 * time.Second):
					t.Fatal("Serve did not return")
				}
			}
			if failures > 0 {
				t.Errorf("Serve returned an error after a graceful shutdown in %d of %d runs: %v", failures, runs, last)
			}
		})
	}
}

func TestNewInboundErrors(t *testing.T) {
	w := newWorld(t)
	good := proxy.InboundConfig{Target: "127.0.0.1:8080", SVID: w.src, Bundle: w.src, Policy: w.policy}
	for _, tt := range []struct {
		name   string
		change func(*proxy.InboundConfig)
		want   string
	}{
		{"no target", func(c *proxy.InboundConfig) { c.Target = "" }, "--target"},
		{"target without port", func(c *proxy.InboundConfig) { c.Target = "127.0.0.1" }, "--target"},
		{"no source", func(c *proxy.InboundConfig) { c.SVID = nil }, "certificate source"},
		{"no policy", func(c *proxy.InboundConfig) { c.Policy = nil }, "policy"},
		{"bad mode", func(c *proxy.InboundConfig) { c.Mode = "lenient" }, "--mode"},
		{"bad protocol", func(c *proxy.InboundConfig) { c.Protocol = "udp" }, "--protocol"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.change(&cfg)
			_, err := proxy.NewInbound(cfg)
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tt.want)) {
				t.Errorf("NewInbound = %v; want an error naming %s", err, tt.want)
			}
		})
	}
	p, err := proxy.NewInbound(good)
	if err != nil {
		t.Fatal(err)
	}
	cfg := p.TLSConfig()
	if cfg.MinVersion != tls.VersionTLS13 || cfg.ClientAuth != tls.RequireAnyClientCert {
		t.Errorf("defaults: min version %x, client auth %v; want TLS 1.3, a client certificate required", cfg.MinVersion, cfg.ClientAuth)
	}
}
