package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// pipeListener hands the server ends of net.Pipe connections to a proxy:
// no sockets, so a fuzzer can make thousands of connections a second.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

// Dial returns the client end of a new connection.
func (l *pipeListener) Dial() (net.Conn, error) {
	c, s := net.Pipe()
	select {
	case l.conns <- pipeConn{s}:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "127.0.0.1:1" }

// pipeConn gives the server end a TCP-like remote address, as the
// migration report expects host:port.
type pipeConn struct{ net.Conn }

func (pipeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// pipeProxy is an inbound proxy served on a pipeListener.
type pipeProxy struct {
	name string
	p    *proxy.Inbound
	ln   *pipeListener
}

func runPipeProxy(t testing.TB, w *world, cfg proxy.InboundConfig) *pipeProxy {
	t.Helper()
	cfg.SVID, cfg.Bundle, cfg.Policy = w.src, w.src, w.policy
	if cfg.Limits.DrainTimeout == 0 {
		cfg.Limits.DrainTimeout = time.Second
	}
	p, err := proxy.NewInbound(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln := newPipeListener()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return &pipeProxy{name: fmt.Sprintf("%s/%s", cfg.Protocol, cfg.Mode), p: p, ln: ln}
}

// released waits for the proxy to let go of every connection.
func (pp *pipeProxy) released(t testing.TB) {
	t.Helper()
	testwait.Eventually(t, func() bool { return pp.p.Active() == 0 }, pp.name+": the proxy to release every connection after its clients left")
}

// FuzzHandshakeInput sends arbitrary first bytes to inbound proxies of
// every protocol and mode, then hangs up: no panic, every connection is
// released, and the proxies go on serving a proper client.
func FuzzHandshakeInput(f *testing.F) {
	w := newWorld(f)
	client := w.ca.Leaf(f, webID)
	echo, web := testnet.Echo(f), httpBackend(f)
	var proxies []*pipeProxy
	for _, protocol := range []proxy.Protocol{proxy.TCP, proxy.HTTP} {
		for _, mode := range []proxy.Mode{proxy.Strict, proxy.Permissive} {
			target := echo
			if protocol == proxy.HTTP {
				target = web
			}
			proxies = append(proxies, runPipeProxy(f, w, proxy.InboundConfig{Target: target, Protocol: protocol, Mode: mode,
				Limits: proxy.Limits{HandshakeTimeout: 2 * time.Second}, Migration: proxy.NewMigrationReport()}))
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0x16})
	f.Add([]byte("\x16\x03\x01\x00\x05hello"))
	f.Add([]byte("\x16\x03\x01\xff\xff"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"))
	f.Add([]byte{0x80, 0x2e, 0x01, 0x00, 0x02})
	hello := clientHelloBytes(f)
	f.Add(hello)
	f.Add(hello[:len(hello)/2])
	var n int
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, pp := range proxies {
			c, err := pp.ln.Dial()
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second)) // safety net
			read := make(chan struct{})
			go func() { io.Copy(io.Discard, c); close(read) }()
			c.Write(data)
			c.Close()
			<-read
			pp.released(t)
		}
		// A proper client is still served (not every run: handshakes cost).
		if n++; n%64 == 1 {
			for _, pp := range proxies {
				if err := pipeExchange(pp, w, client); err != nil {
					t.Fatalf("%s after %q: %v", pp.name, data, err)
				}
			}
		}
	})
}

// clientHelloBytes is a complete ClientHello as crypto/tls sends it.
func clientHelloBytes(t testing.TB) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer b.Close()
	go func() {
		tls.Client(a, &tls.Config{ServerName: "localhost"}).Handshake()
		a.Close()
	}()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(b, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr, body...)
}

// pipeExchange does one mTLS exchange through pp.
func pipeExchange(pp *pipeProxy, w *world, id *identity.Identity) error {
	c, err := pp.ln.Dial()
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	cfg := w.clientTLS(id, "http/1.1")
	cfg.ServerName = "localhost"
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	if strings.HasPrefix(pp.name, "tcp") {
		if _, err := io.WriteString(tc, "ping"); err != nil {
			return err
		}
		b := make([]byte, 4)
		if _, err := io.ReadFull(tc, b); err != nil {
			return err
		}
		return nil
	}
	io.WriteString(tc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// FuzzHTTPHeaders: whatever headers an authenticated client sends, the
// service sees exactly the one X-Forwarded-Client-Cert the proxy sets.
func FuzzHTTPHeaders(f *testing.F) {
	w := newWorld(f)
	client := w.ca.Leaf(f, webID)
	pp := runPipeProxy(f, w, proxy.InboundConfig{Target: httpBackend(f), Protocol: proxy.HTTP})
	send := func(t testing.TB, extra string) (code int, s seen, err error) {
		c, err := pp.ln.Dial()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second)) // a declared body that never comes
		cfg := w.clientTLS(client, "http/1.1")
		cfg.ServerName = "localhost"
		tc := tls.Client(c, cfg)
		// The last chunk ends a chunked body; otherwise it is a second,
		// malformed request that is never answered before we hang up.
		go io.WriteString(tc, "GET /fuzz HTTP/1.1\r\nHost: backend\r\n"+extra+"\r\n0\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			return 0, s, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			return resp.StatusCode, s, err
		}
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatalf("backend body %q: %v", b, err)
		}
		return resp.StatusCode, s, nil
	}
	code, ref, err := send(f, "")
	if err != nil || code != 200 || len(ref.XFCC) != 1 {
		f.Fatalf("reference request: %d %v, %s %q", code, err, proxy.XFCCHeader, ref.XFCC)
	}
	want := ref.XFCC[0]

	f.Add("X-Forwarded-Client-Cert", "URI="+adminID, "By=x;URI="+adminID)
	f.Add("x-forwarded-client-cert", "URI="+adminID, "")
	f.Add("X-FORWARDED-CLIENT-CERT", "URI="+adminID, "URI=a")
	f.Add("X-Forwarded-Client-Cert ", "URI="+adminID, "x")
	f.Add("X_Forwarded_Client_Cert", "URI="+adminID, "x")
	f.Add("x-forwarded_client.cert", "URI="+adminID, "x")
	f.Add("Transfer-Encoding", "chunked", "x")
	f.Add("X-Other", "a\r\nX-Forwarded-Client-Cert: URI="+adminID, "x")
	f.Add("X-Other", "a\r\n X-Forwarded-Client-Cert: URI="+adminID, "x")
	f.Add("X-Other", "a\nX-Forwarded-Client-Cert: URI="+adminID, "x")
	f.Add("X-Other", "a\x00b", "x")
	f.Add("Host", "evil", "x")
	f.Fuzz(func(t *testing.T, name, value, xfcc string) {
		code, s, err := send(t, name+": "+value+"\r\n"+proxy.XFCCHeader+": "+xfcc+"\r\n")
		if err != nil || code != 200 {
			return // refused by the proxy or the service: nothing reached it
		}
		if len(s.XFCC) != 1 || s.XFCC[0] != want {
			t.Fatalf("headers %q: %q and %s: %q: the service saw %s %q; want only %q",
				name, value, proxy.XFCCHeader, xfcc, proxy.XFCCHeader, s.XFCC, want)
		}
		// Nor under a spelling a CGI or WSGI backend reads as it.
		for k, v := range s.Header {
			if k != proxy.XFCCHeader && normalHeader(k) == "x-forwarded-client-cert" {
				t.Fatalf("header %q: %q reached the service as %s: %q", name, value, k, v)
			}
		}
	})
}
