package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/mutual-tls/mutual/internal/proxy"
)

// TestHTTP1PooledConnectionReset: a pooled service connection the service
// resets as the next request arrives (it read the request, then closed
// with SO_LINGER 0: the proxy reads ECONNRESET once, EOF after) is one the
// service closed meanwhile: a GET is sent again on a new connection and
// the client gets that answer, not a 502.
func TestHTTP1PooledConnectionReset(t *testing.T) {
	w := newWorld(t)
	var mu sync.Mutex
	seen := map[net.Conn]int{} // requests read per service connection
	backend := serveRequests(t, func(c net.Conn, req *http.Request, _ int64) bool {
		mu.Lock()
		seen[c]++
		n := seen[c]
		mu.Unlock()
		if n > 1 {
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
			return false
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine")
		return true
	})
	r := runInbound(t, w, proxy.InboundConfig{Target: backend, Protocol: proxy.HTTP})
	c := dialH1(t, w, r.addr)
	br := bufio.NewReader(c)
	for i, path := range []string{"/first", "/reset"} {
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: b\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d (%s): no response: %v", i, path, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || string(body) != "fine" {
			t.Fatalf("request %d (%s): %d %q (%v), want 200 %q\n%s", i, path, resp.StatusCode, body, err, "fine", r.logs.String())
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 {
		t.Fatalf("%d service connections, want 2 (the pooled one reset, then a new one)", len(seen))
	}
}
