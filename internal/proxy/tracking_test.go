package proxy_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testwait"
	"github.com/mutual-tls/mutual/tlsconfig"
)

// revoker is the revocation wiring of `mutual proxy inbound`, without the
// CA: a set of revoked serials that the peer check consults, and a revoke
// that adds to it and then closes live connections, in the watcher's order.
type revoker struct {
	mu      sync.Mutex
	revoked map[string]bool
	// checked receives each serial the peer check has passed.
	checked chan string
}

func newRevoker() *revoker {
	return &revoker{revoked: map[string]bool{}, checked: make(chan string, 64)}
}

func (rv *revoker) check(id spiffeid.ID, chain []*x509.Certificate) error {
	s := pki.FormatSerial(chain[0].SerialNumber)
	rv.mu.Lock()
	bad := rv.revoked[s]
	rv.mu.Unlock()
	if bad {
		return &tlsconfig.PeerError{Reason: tlsconfig.ReasonRevoked, ID: id, Cert: chain[0], Err: fmt.Errorf("certificate %s is revoked", s)}
	}
	select {
	case rv.checked <- s:
	default:
	}
	return nil
}

// revoke marks serial revoked, then closes its live connections through p.
func (rv *revoker) revoke(p interface {
	CloseConnections(func(spiffeid.ID, string) bool) int
}, serial string) int {
	rv.mu.Lock()
	rv.revoked[serial] = true
	rv.mu.Unlock()
	return p.CloseConnections(func(_ spiffeid.ID, s string) bool { return s == serial })
}

func serialHex(id *identity.Identity) string { return pki.FormatSerial(id.Leaf().SerialNumber) }

// tunnelBackend is an HTTP service that switches every request asking for
// it to a raw tunnel (as a WebSocket server does) and echoes in it. ended
// receives one value when the service's side of a tunnel sees its end.
func tunnelBackend(t *testing.T) (addr string, ended chan struct{}) {
	t.Helper()
	ended = make(chan struct{}, 16)
	return testnet.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		io.Copy(c, br)
		ended <- struct{}{}
	}), ended
}

// openTunnel connects to the proxy as id, asks for a protocol switch and
// checks one echo through the tunnel.
func openTunnel(t *testing.T, w *world, addr string, id *identity.Identity) *rawConn {
	t.Helper()
	c, err := tls.Dial("tcp", addr, w.clientTLS(id, "http/1.1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	rc := &rawConn{Conn: c, br: bufio.NewReader(c)}
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answered %d, want 101", resp.StatusCode)
	}
	if err := ping(rc, proxy.TCP); err != nil {
		t.Fatalf("echo through the tunnel: %v", err)
	}
	return rc
}

// waitEnded waits for the service's leg of a tunnel to end.
func waitEnded(t *testing.T, ended chan struct{}, what string) {
	t.Helper()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatalf("after 10 s: %s: the service's leg of the tunnel is still open", what)
	}
}

// TestHTTPUpgradedTunnelStaysTracked attacks the http-mode proxy with a
// WebSocket-style upgrade (101 Switching Protocols): the tunnel must stay
// under the proxy's control. A revoked client's tunnel is closed, both legs;
// an open tunnel counts against MaxConnections; an idle one is closed; and
// the drain on shutdown closes it.
func TestHTTPUpgradedTunnelStaysTracked(t *testing.T) {
	w := newWorld(t)
	client := w.ca.Leaf(t, webID)

	t.Run("revoked", func(t *testing.T) {
		backend, ended := tunnelBackend(t)
		rv := newRevoker()
		r := runInbound(t, w, proxy.InboundConfig{Target: backend, Protocol: proxy.HTTP, PeerCheck: rv.check})
		tun := openTunnel(t, w, r.addr, client)
		if n := r.p.Active(); n != 1 {
			t.Errorf("BUG: %d connections counted with one tunnel open, want 1", n)
		}
		if n := rv.revoke(r.p, serialHex(client)); n != 1 {
			t.Errorf("BUG: revocation closed %d connections, want the tunnel (1)", n)
		}
		if err := closedByProxy(tun); err != nil {
			t.Fatalf("BUG: revoked client's tunnel: %v", err)
		}
		waitEnded(t, ended, "revoked")
		testwait.Eventually(t, func() bool { return r.p.Active() == 0 }, "the tunnel released")
	})

	t.Run("max connections", func(t *testing.T) {
		backend, _ := tunnelBackend(t)
		r := runInbound(t, w, proxy.InboundConfig{Target: backend, Protocol: proxy.HTTP, Limits: proxy.Limits{MaxConnections: 1}})
		tun := openTunnel(t, w, r.addr, client)
		res := getOnce(w.clientTLS(client), "https://"+r.addr+"/")
		if res.err == nil {
			t.Fatalf("BUG: a second connection got %d while a tunnel holds the only slot", res.code)
		}
		tun.Close()
		testwait.Eventually(t, func() bool { return r.p.Active() == 0 }, "the closed tunnel released")
	})

	t.Run("idle", func(t *testing.T) {
		backend, ended := tunnelBackend(t)
		r := runInbound(t, w, proxy.InboundConfig{Target: backend, Protocol: proxy.HTTP, Limits: proxy.Limits{IdleTimeout: 300 * time.Millisecond}})
		tun := openTunnel(t, w, r.addr, client)
		if err := closedByProxy(tun); err != nil {
			t.Fatalf("BUG: idle tunnel: %v", err)
		}
		waitEnded(t, ended, "idle")
		testwait.Eventually(t, func() bool { return r.p.Active() == 0 }, "the idle tunnel released")
	})

	t.Run("drain", func(t *testing.T) {
		backend, ended := tunnelBackend(t)
		r := runInbound(t, w, proxy.InboundConfig{Target: backend, Protocol: proxy.HTTP, Limits: proxy.Limits{DrainTimeout: 500 * time.Millisecond}})
		tun := openTunnel(t, w, r.addr, client)
		if err := r.stop(t); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Fatal(err)
		}
		// Serve has returned: nothing of the proxy may still be relaying.
		tun.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := tun.br.ReadByte(); err == nil || isTimeout(err) {
			t.Fatalf("BUG: the tunnel outlived the drain (read: %v)", err)
		}
		waitEnded(t, ended, "drain")
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// holdFinished is a client's connection that holds back the last record of
// its second handshake flight (the TLS 1.3 Finished, after Certificate and
// CertificateVerify) until release is called: the server has verified the
// certificate but cannot complete the handshake until then.
type holdFinished struct {
	net.Conn
	mu      sync.Mutex
	held    []byte
	done    bool
	records int // encrypted records in the flight, for the test's sanity
}

func (h *holdFinished) Write(b []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done || len(b) < 5 {
		return h.Conn.Write(b)
	}
	// Find the last application_data (encrypted handshake) record.
	last, n := -1, 0
	for off := 0; off+5 <= len(b); {
		l := int(b[off+3])<<8 | int(b[off+4])
		if b[off] == 23 {
			last, n = off, n+1
		}
		off += 5 + l
	}
	if last < 0 {
		return h.Conn.Write(b)
	}
	h.done, h.records = true, n
	if _, err := h.Conn.Write(b[:last]); err != nil {
		return 0, err
	}
	h.held = append([]byte(nil), b[last:]...)
	return len(b), nil
}

func (h *holdFinished) release() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := h.Conn.Write(h.held)
	return err
}

// TestHeldBackFinishedAfterRevocation attacks the window between the
// proxy's certificate check and its tracking of the connection: the client
// sends its certificate, waits until the proxy has checked it, is revoked
// (the revocation closes nothing: the connection is not live yet), and
// only then sends its Finished. Its connection must not work.
func TestHeldBackFinishedAfterRevocation(t *testing.T) {
	w := newWorld(t)
	for _, protocol := range []proxy.Protocol{proxy.HTTP, proxy.TCP} {
		t.Run(string(protocol), func(t *testing.T) {
			target := backendFor(t, protocol)
			rv := newRevoker()
			r := runInbound(t, w, proxy.InboundConfig{Target: target, Protocol: protocol, PeerCheck: rv.check})
			client := w.ca.Leaf(t, webID)
			raw, err := net.DialTimeout("tcp", r.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			raw.SetDeadline(time.Now().Add(10 * time.Second))
			hold := &holdFinished{Conn: raw}
			cfg := w.clientTLS(client, "http/1.1")
			cfg.ServerName = "127.0.0.1"
			c := tls.Client(hold, cfg)
			if err := c.Handshake(); err != nil {
				t.Fatal(err)
			}
			if hold.records < 3 {
				t.Fatalf("the client's flight had %d encrypted records; want Certificate, CertificateVerify and Finished apart", hold.records)
			}
			select {
			case s := <-rv.checked:
				if s != serialHex(client) {
					t.Fatalf("checked %s", s)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the proxy never checked the client's certificate")
			}
			rv.revoke(r.p, serialHex(client))
			if err := hold.release(); err != nil {
				t.Fatal(err)
			}
			rc := &rawConn{Conn: c, br: bufio.NewReader(c)}
			if protocol == proxy.TCP {
				if err := ping(rc, protocol); err == nil {
					t.Fatal("BUG: a client revoked before its Finished relays through the proxy")
				}
				return
			}
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
			resp, err := http.ReadResponse(rc.br, nil)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					t.Fatal("BUG: a client revoked before its Finished got 200 through the proxy")
				}
			}
			testwait.Eventually(t, func() bool { return r.p.Active() == 0 }, "the refused connection released")
		})
	}
}

// silentBackend accepts and reads but never answers nor closes, even after
// EOF: a service that hangs. got receives one value when a connection's
// first bytes arrive, ended one when the proxy's leg stops sending (EOF or
// an error); the service holds its end open until the test ends.
func silentBackend(t *testing.T) (addr string, got chan struct{}, ended chan struct{}) {
	t.Helper()
	got, ended = make(chan struct{}, 16), make(chan struct{}, 16)
	quit := make(chan struct{})
	addr = testnet.Serve(t, func(c net.Conn) {
		buf := make([]byte, 1024)
		first := true
		for {
			if _, err := c.Read(buf); err != nil {
				ended <- struct{}{}
				<-quit
				return
			}
			if first {
				got <- struct{}{}
				first = false
			}
		}
	})
	// Registered after testnet.Serve's cleanup, so it runs before it.
	t.Cleanup(func() { close(quit) })
	return addr, got, ended
}

// openSilent connects as id through r to a silent backend and waits until
// the backend has the first bytes, so the connection is live end to end.
func openSilent(t *testing.T, w *world, r *proxyRun, id *identity.Identity, got chan struct{}) (*tls.Conn, *net.TCPConn) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", r.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	cfg := w.clientTLS(id)
	cfg.ServerName = "127.0.0.1"
	c := tls.Client(raw, cfg)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "anyone there?"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the backend never got the client's bytes")
	}
	return c, raw.(*net.TCPConn)
}

// TestTCPSilentBackend attacks a tcp-mode proxy whose service never
// answers: the drain must end within its timeout (not the idle timeout),
// revocation must close both legs, and clients that gave up (reset, or
// closed and left) must stop counting against MaxConnections.
func TestTCPSilentBackend(t *testing.T) {
	w := newWorld(t)
	client := w.ca.Leaf(t, webID)
	// An hour of idleness allowed: only the fix can end these connections.
	long := proxy.Limits{IdleTimeout: time.Hour, DrainTimeout: 500 * time.Millisecond, HalfCloseTimeout: time.Hour}

	t.Run("drain", func(t *testing.T) {
		backend, got, ended := silentBackend(t)
		r := runInbound(t, w, proxy.InboundConfig{Target: backend, Limits: long})
		c, _ := openSilent(t, w, r, client, got)
		if err := r.stop(t); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Fatal(err)
		}
		waitEnded(t, ended, "drain")
		if err := closedByProxy(c); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("revoked", func(t *testing.T) {
		backend, got, ended := silentBackend(t)
		rv := newRevoker()
		r := runInbound(t, w, proxy.InboundConfig{Target: backend, Limits: long, PeerCheck: rv.check})
		c, _ := openSilent(t, w, r, client, got)
		if n := rv.revoke(r.p, serialHex(client)); n != 1 {
			t.Fatalf("revocation closed %d connections, want 1", n)
		}
		if err := closedByProxy(c); err != nil {
			t.Fatal(err)
		}
		waitEnded(t, ended, "revoked")
		testwait.Eventually(t, func() bool { return r.p.Active() == 0 }, "BUG: the revoked connection still counted while its service leg hangs")
	})

	t.Run("client reset", func(t *testing.T) {
		backend, got, ended := silentBackend(t)
		lim := long
		lim.MaxConnections = 1
		r := runInbound(t, w, proxy.InboundConfig{Target: backend, Limits: lim})
		_, raw := openSilent(t, w, r, client, got)
		raw.SetLinger(0)
		raw.Close() // RST: the client gave up
		waitEnded(t, ended, "client reset")
		testwait.Eventually(t, func() bool { return r.p.Active() == 0 }, "BUG: a client that reset still counts against MaxConnections")
		// Its slot is free again.
		openSilent(t, w, r, client, got)
	})

	t.Run("client closed", func(t *testing.T) {
		backend, got, ended := silentBackend(t)
		lim := long
		lim.MaxConnections = 1
		lim.HalfCloseTimeout = 200 * time.Millisecond
		r := runInbound(t, w, proxy.InboundConfig{Target: backend, Limits: lim})
		c, _ := openSilent(t, w, r, client, got)
		c.Close() // close_notify and FIN: the client finished and left
		waitEnded(t, ended, "client closed")
		testwait.Eventually(t, func() bool { return r.p.Active() == 0 }, "BUG: a client that closed still counts against MaxConnections while the service stays silent")
		openSilent(t, w, r, client, got)
	})
}

// holdServerFinished relays TCP from a listener to target, holding back
// the server's fifth encrypted record (its TLS 1.3 Finished, after
// EncryptedExtensions, CertificateRequest, Certificate and
// CertificateVerify) until release is closed.
func holdServerFinished(t *testing.T, target string) (addr string, release chan struct{}) {
	t.Helper()
	release = make(chan struct{})
	addr = testnet.Serve(t, func(c net.Conn) {
		s, err := net.DialTimeout("tcp", target, 5*time.Second)
		if err != nil {
			return
		}
		defer s.Close()
		go func() { io.Copy(s, c); s.Close() }()
		encrypted := 0
		hdr := make([]byte, 5)
		for {
			if _, err := io.ReadFull(s, hdr); err != nil {
				return
			}
			body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
			if _, err := io.ReadFull(s, body); err != nil {
				return
			}
			if hdr[0] == 23 {
				encrypted++
				if encrypted == 5 {
					select {
					case <-release:
					case <-time.After(10 * time.Second):
						return
					}
				}
			}
			if _, err := c.Write(append(hdr, body...)); err != nil {
				return
			}
		}
	})
	return addr, release
}

// TestOutboundServerRevokedBeforeItsFinished attacks the outbound proxy's
// window between checking the server's certificate and tracking the
// tunnel: the server's Finished is held back until the proxy has checked
// the certificate and the server has been revoked (which closes nothing
// yet). The tunnel must not go live.
func TestOutboundServerRevokedBeforeItsFinished(t *testing.T) {
	w := newWorld(t)
	in := inboundForOutbound(t, w, proxy.TCP, testnet.Echo(t))
	relay, release := holdServerFinished(t, in.addr)
	dir := t.TempDir()
	if err := w.ca.Leaf(t, outID).Save(dir); err != nil {
		t.Fatal(err)
	}
	src, err := identity.NewDirSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	pat, err := authz.ParsePattern(proxyID)
	if err != nil {
		t.Fatal(err)
	}
	rv := newRevoker()
	o, err := proxy.NewOutbound(proxy.OutboundConfig{Target: relay, ServerName: "127.0.0.1", Expect: []authz.Pattern{pat}, SVID: src, Bundle: src,
		PeerCheck: rv.check, Limits: proxy.Limits{DrainTimeout: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", testnet.Run(t, o.Serve).Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var serial string
	select {
	case serial = <-rv.checked:
	case <-time.After(10 * time.Second):
		t.Fatal("the outbound proxy never checked the server's certificate")
	}
	if serial != pki.FormatSerial(w.src.Identity().Leaf().SerialNumber) {
		t.Fatalf("checked %s, not the server's certificate", serial)
	}
	rv.revoke(o, serial)
	close(release)
	rc := &rawConn{Conn: c, br: bufio.NewReader(c)}
	if err := ping(rc, proxy.TCP); err == nil {
		t.Fatal("BUG: a tunnel to a server revoked before its Finished relays through the outbound proxy")
	}
}
