package proxy_test

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// handedBackend accepts connections and hands each to the test, which
// reads and writes the service's side itself; the service holds its end
// open until the test ends.
func handedBackend(t *testing.T) (addr string, conns chan net.Conn) {
	t.Helper()
	conns = make(chan net.Conn, 4)
	quit := make(chan struct{})
	addr = testnet.Serve(t, func(c net.Conn) {
		conns <- c
		<-quit
	})
	// Registered after testnet.Serve's cleanup, so it runs before it.
	t.Cleanup(func() { close(quit) })
	return addr, conns
}

// readString reads exactly len(want) bytes from c and compares.
func readString(t *testing.T, c net.Conn, want, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
		t.Fatalf("%s: read %q, %v; want %q", what, got, err, want)
	}
}

// TestTCPParkedRelay: a tcp-mode connection silent past the park delay
// keeps no goroutine (both directions park), and everything still reaches
// it: bytes either way, half-closes, a reset, revocation, the idle timeout
// and the drain.
func TestTCPParkedRelay(t *testing.T) {
	defer proxy.SetParkDelay(10 * time.Millisecond)()
	w := newWorld(t)
	client := w.ca.Leaf(t, webID)
	long := proxy.Limits{IdleTimeout: time.Hour, HalfCloseTimeout: time.Hour, DrainTimeout: 500 * time.Millisecond}

	open := func(t *testing.T, r *proxyRun, conns chan net.Conn) (*tls.Conn, net.Conn) {
		t.Helper()
		raw, err := net.DialTimeout("tcp", r.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { raw.Close() })
		cfg := w.clientTLS(client)
		cfg.ServerName = "127.0.0.1"
		c := tls.Client(raw, cfg)
		if err := c.Handshake(); err != nil {
			t.Fatal(err)
		}
		select {
		case svc := <-conns:
			return c, svc
		case <-time.After(10 * time.Second):
			t.Fatal("the proxy never connected to the service")
		}
		return nil, nil
	}
	parked := func(t *testing.T, r *proxyRun, n int64) {
		t.Helper()
		testwait.Eventually(t, func() bool { return r.p.ParkedRelays() == n }, "relay directions parked")
	}

	t.Run("both ways", func(t *testing.T) {
		backend, conns := handedBackend(t)
		r := runInbound(t, w, proxy.InboundConfig{Target: backend, Limits: long})
		c, svc := open(t, r, conns)
		parked(t, r, 2)
		for range 3 {
			io.WriteString(c, "ping")
			readString(t, svc, "ping", "the service")
			parked(t, r, 2)
			io.WriteString(svc, "pong")
			readString(t, c, "pong", "the client")
			parked(t, r, 2)
		}
		// A half-close reaches the parked service leg; the answer after it
		// reaches the client.
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		svc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := svc.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("the service read %d bytes, %v after the client's half-close; want EOF", n, err)
		}
		parked(t, r, 1)
		io.WriteString(svc, "bye")
		svc.Close()
		readString(t, c, "bye", "the client after its half-close")
		if err := closedByProxy(c); err != nil {
			t.Fatal(err)
		}
		testwait.Eventually(t, func() bool { return r.p.Active() == 0 && r.p.ParkedRelays() == 0 }, "the connection to end")
	})

	// Bytes that carry no data (here half a TLS record header) wake the
	// client's direction; it must park again once silent, not wait in a
	// goroutine, holding a buffer, until the idle timeout.
	t.Run("woken without data", func(t *testing.T) {
		backend, conns := handedBackend(t)
		r := runInbound(t, w, proxy.InboundConfig{Target: backend, Limits: long})
		c, svc := open(t, r, conns)
		parked(t, r, 2)
		// Counted, not seen parked < 2: it parks again within the park
		// delay, quicker than a poll may look.
		wakes := r.p.ParkWakes()
		if _, err := c.NetConn().Write([]byte{0x17, 0x03}); err != nil {
			t.Fatal(err)
		}
		testwait.Eventually(t, func() bool { return r.p.ParkWakes() > wakes }, "the client's direction to wake")
		parked(t, r, 2)
		svc.Close()
	})

	// Each end below must reach a connection whose directions are both
	// parked: nothing waits on its sockets but the parker.
	ends := []struct {
		name string
		lim  func(proxy.Limits) proxy.Limits
		end  func(t *testing.T, r *proxyRun, raw net.Conn, rv *revoker)
	}{
		{"revoked", nil, func(t *testing.T, r *proxyRun, _ net.Conn, rv *revoker) {
			if n := rv.revoke(r.p, serialHex(client)); n != 1 {
				t.Fatalf("revocation closed %d connections, want 1", n)
			}
		}},
		{"idle timeout", func(l proxy.Limits) proxy.Limits { l.IdleTimeout = 300 * time.Millisecond; return l }, nil},
		{"client reset", nil, func(t *testing.T, _ *proxyRun, raw net.Conn, _ *revoker) {
			raw.(*net.TCPConn).SetLinger(0)
			raw.Close()
		}},
		{"drain", nil, func(t *testing.T, r *proxyRun, _ net.Conn, _ *revoker) {
			if err := r.stop(t); err != nil && !errors.Is(err, net.ErrClosed) {
				t.Fatal(err)
			}
		}},
	}
	for _, e := range ends {
		t.Run(e.name, func(t *testing.T) {
			backend, conns := handedBackend(t)
			lim := long
			if e.lim != nil {
				lim = e.lim(lim)
			}
			rv := newRevoker()
			r := runInbound(t, w, proxy.InboundConfig{Target: backend, Limits: lim, PeerCheck: rv.check})
			c, svc := open(t, r, conns)
			parked(t, r, 2)
			if e.end != nil {
				e.end(t, r, c.NetConn(), rv)
			}
			svc.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.Copy(io.Discard, svc); err != nil {
				t.Fatalf("the service's leg: %v, want it closed", err)
			}
			if e.name != "client reset" {
				if err := closedByProxy(c); err != nil {
					t.Fatal(err)
				}
			}
			testwait.Eventually(t, func() bool { return r.p.Active() == 0 && r.p.ParkedRelays() == 0 }, "the connection to end")
		})
	}
}
