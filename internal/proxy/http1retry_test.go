package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testwait"
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

// TestHTTP1BodyClockAfterDial: a request body's minimum rate is the
// client's to keep from when the proxy begins reading it, not from before
// the dial: a service that accepts late (the proxy's SYN dropped by a
// full accept queue, sent again after the kernel's retransmission
// timeout, which is longer than the idle timeout here) does not turn a
// client's body, sent meanwhile, into a 408.
func TestHTTP1BodyClockAfterDial(t *testing.T) {
	w := newWorld(t)
	ln, addr, fillers := testnet.FullQueue(t)
	r := runInbound(t, w, proxy.InboundConfig{Target: addr, Protocol: proxy.HTTP,
		Limits: proxy.Limits{HandshakeTimeout: 5 * time.Second, IdleTimeout: 300 * time.Millisecond, DialTimeout: 30 * time.Second}})
	c := dialH1(t, w, r.addr)
	io.WriteString(c, "POST /ok HTTP/1.1\r\nHost: b\r\nContent-Length: 5\r\n\r\n")
	testwait.Eventually(t, func() bool { return synSent(t, addr) }, "the proxy's dial to wait on the full accept queue")
	io.WriteString(c, "hello")
	served := make(chan string, 1)
	go func() {
		for {
			sc, err := ln.Accept()
			if err != nil {
				return
			}
			// The connections that filled the queue, then the proxy's.
			if fillers[sc.RemoteAddr().String()] {
				sc.Close()
				continue
			}
			req, err := http.ReadRequest(bufio.NewReader(sc))
			if err != nil {
				sc.Close()
				continue
			}
			body, _ := io.ReadAll(req.Body)
			io.WriteString(sc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
			sc.Close()
			served <- string(body)
			return
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no response: %v\n%s", err, r.logs.String())
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("%d %q, want 200 %q (the service accepted late, the client was not slow)\n%s", resp.StatusCode, body, "ok", r.logs.String())
	}
	if got := <-served; got != "hello" {
		t.Fatalf("the service got %q", got)
	}
}

// synSent reports whether a loopback socket is connecting to addr
// (SYN_SENT in /proc/net/tcp).
func synSent(t *testing.T, addr string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	peer := fmt.Sprintf("0100007F:%04X", p)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 3 && f[2] == peer && f[3] == "02" {
			return true
		}
	}
	return false
}
