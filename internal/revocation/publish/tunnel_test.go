package publish_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// upgradeEcho is an HTTP service that answers a WebSocket upgrade with 101
// and then echoes raw bytes; ended receives one value whenever the
// service's side of a tunnel sees its end.
func upgradeEcho(t *testing.T) (string, chan struct{}) {
	t.Helper()
	ended := make(chan struct{}, 16)
	return testnet.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil || !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		io.Copy(c, br)
		ended <- struct{}{}
	}), ended
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
	w := &revocation.Watcher{CAURLs: []string{e.URL}, Source: src}
	p, err := proxy.NewInbound(proxy.InboundConfig{Target: backend, SVID: src, Bundle: src, Policy: proxy.StaticPolicy{P: pol},
		Protocol: proxy.HTTP, PeerCheck: w.Check, Limits: proxy.Limits{DrainTimeout: 500 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	w.OnRevoke = func(ev revocation.Event) {
		p.CloseConnections(func(_ spiffeid.ID, serial string) bool { return serial == ev.Serial })
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	srv := testnet.Run(t, p.Serve)
	testwait.Eventually(t, w.FeedUp, "the watcher never connected to the feed")

	a := e.Enroll(t, "spiffe://example.org/ns/prod/ws-a", api.TokenRequest{})
	b := e.Enroll(t, "spiffe://example.org/ns/prod/ws-b", api.TokenRequest{})
	ta, tb := openWebSocket(t, srv.Addr, a), openWebSocket(t, srv.Addr, b)
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
	if err := srv.Stop(t); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	tb.waitClosed(t)
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("BUG: a tunnel's service leg outlived the drain")
	}
}
