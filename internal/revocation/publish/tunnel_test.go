package publish_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/revocation"
)

// upgradeEcho is an HTTP service that answers a WebSocket upgrade with 101
// and then echoes raw bytes; ended receives one value whenever the
// service's side of a tunnel sees its end.
func upgradeEcho(t *testing.T) (string, chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil || !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
					return
				}
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
				io.Copy(c, br)
				ended <- struct{}{}
			}()
		}
	}()
	return ln.Addr().String(), ended
}

// openWebSocket upgrades a connection through the proxy at addr as id and
// checks one echo through the tunnel.
func openWebSocket(t *testing.T, addr string, id *identity.Identity) *peerConn {
	t.Helper()
	cfg := clientTLS(id, "127.0.0.1")
	cfg.NextProtos = []string{"http/1.1"}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	pc := &peerConn{conn: c, r: bufio.NewReader(c)}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /socket HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	resp, err := http.ReadResponse(pc.r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answered %d, want 101", resp.StatusCode)
	}
	c.SetDeadline(time.Time{})
	if err := pc.roundTrip("through the tunnel"); err != nil {
		t.Fatal(err)
	}
	return pc
}

// TestProxyClosesRevokedWebSocketTunnel: an http-mode proxy wired to the
// CA's push feed closes a WebSocket tunnel (upgraded with 101 Switching
// Protocols) when its client is revoked, both legs, and leaves another
// client's tunnel alone; the drain on shutdown closes the tunnels left.
func TestProxyClosesRevokedWebSocketTunnel(t *testing.T) {
	t.Parallel()
	e := startCA(t, "")
	src := e.proxyIdentity(t)
	backend, ended := upgradeEcho(t)
	pol, _ := authz.FromPatterns([]string{"spiffe://example.org/ns/prod/*"})
	w := &revocation.Watcher{CAURLs: []string{e.svc.URL}, Source: src}
	p, err := proxy.NewInbound(proxy.InboundConfig{Target: backend, SVID: src, Bundle: src, Policy: proxy.StaticPolicy{P: pol},
		Protocol: proxy.HTTP, PeerCheck: w.Check, Limits: proxy.Limits{DrainTimeout: 500 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	w.OnRevoke = func(ev revocation.Event) {
		p.CloseConnections(func(_ spiffeid.ID, serial string) bool { return serial == ev.Serial })
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); w.Run(ctx) }()
	go func() { defer wg.Done(); served <- p.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	eventually(t, 10*time.Second, "the watcher never connected to the feed", w.FeedUp)

	a := e.enroll(t, "spiffe://example.org/ns/prod/ws-a", api.TokenRequest{})
	b := e.enroll(t, "spiffe://example.org/ns/prod/ws-b", api.TokenRequest{})
	ta, tb := openWebSocket(t, ln.Addr().String(), a), openWebSocket(t, ln.Addr().String(), b)
	e.revoke(t, a.Leaf(), "keyCompromise")
	ta.waitClosed(t)
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("BUG: the service's leg of the revoked client's tunnel is still open")
	}
	if err := tb.roundTrip("still here"); err != nil {
		t.Fatalf("another client's tunnel was disturbed: %v", err)
	}

	// Shutdown: the drain ends with the tunnel closed, not left behind.
	cancel()
	select {
	case err := <-served:
		if err != nil && !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after the drain")
	}
	tb.waitClosed(t)
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("BUG: a tunnel's service leg outlived the drain")
	}
}
