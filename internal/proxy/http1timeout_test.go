package proxy_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// Attacks on the proxy's patience, on the HTTP/1.1 path: every one must end
// with the proxy closing what it holds (or answering 504), logged and
// counted. The limits are short so that each attack ends soon; the tests
// wait on the connection's end, never on a clock.

// shortLimits give up quickly on a stalled peer.
var shortLimits = proxy.Limits{HandshakeTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}

// dialH1 opens an HTTP/1.1 mTLS connection to the proxy as webID, with an
// I/O bound (not an assertion) so that a hung proxy fails the test.
func dialH1(t *testing.T, w *world, addr string) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", addr, w.clientTLS(w.ca.Leaf(t, webID), "http/1.1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return c
}

// trickle writes s to c every 20 ms, each write well within any idle
// timeout, until the returned stop is called or a write fails.
func trickle(c io.Writer, s string) (stop func()) {
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if _, err := io.WriteString(c, s); err != nil {
					return
				}
			}
		}
	}()
	return func() { close(done) }
}

// timedOut waits until the proxy has logged and counted a timeout at stage.
func timedOut(t *testing.T, r *proxyRun, stage string) {
	t.Helper()
	testwait.Eventually(t, func() bool {
		return r.logs.Has("request timed out", map[string]any{"stage": stage, "peer_id": webID}) &&
			metricValue(t, r.reg, "mutual_proxy_timeouts_total", map[string]string{"stage": stage}) >= 1
	}, "the "+stage+" timeout logged and counted")
}

// TestHTTP1ClientTimeouts: a client that sends its request head byte by
// byte, a head without its body, or that never reads its response, is
// cut off; so is the service's leg it held.
func TestHTTP1ClientTimeouts(t *testing.T) {
	w := newWorld(t)
	t.Run("head dripped", func(t *testing.T) {
		rb := newRecordingBackend(t)
		r := runInbound(t, w, proxy.InboundConfig{Target: rb.addr, Protocol: proxy.HTTP, Limits: shortLimits})
		c := dialH1(t, w, r.addr)
		io.WriteString(c, "GET /ok HTTP/1.1\r\nHost: b\r\n")
		// A header line a little at a time, for ever: only a bound on the
		// whole head ends it.
		defer trickle(c, "X-A: a\r\n")()
		if err := closedByProxy(c); err != nil {
			t.Fatal(err)
		}
		timedOut(t, r, "request_head")
		if got := rb.take(); len(got) != 0 {
			t.Errorf("the service read %q", got)
		}
	})
	// A body that stops, or that goes on arriving a byte at a time, each
	// well within the idle timeout: it must arrive at a minimum average
	// rate, or it would hold a connection to the service for as long as
	// its length allows.
	for _, tt := range []struct {
		name    string
		size    int
		trickle bool
	}{{"body never sent/100", 100, false}, {"body never sent/100000", 100000, false}, {"body trickled", 100000, true}} {
		size := tt.size
		t.Run(tt.name, func(t *testing.T) {
			rb := newRecordingBackend(t)
			r := runInbound(t, w, proxy.InboundConfig{Target: rb.addr, Protocol: proxy.HTTP, Limits: shortLimits})
			c := dialH1(t, w, r.addr)
			sent := size / 2
			if tt.trickle {
				// Nothing ahead of the trickle: bytes sent at once would
				// raise the average rate, which is what is bounded.
				sent = 0
			}
			fmt.Fprintf(c, "POST /ok HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n\r\n%s", size, strings.Repeat("b", sent))
			if tt.trickle {
				defer trickle(c, "x")()
			}
			if err := closedByProxy(c); err != nil {
				t.Fatal(err)
			}
			timedOut(t, r, "request_body")
			testwait.Eventually(t, func() bool { return r.p.Active() == 0 }, "the connection released")
			if size > 4096 {
				// The part already forwarded: the service's leg is closed.
				testwait.Eventually(t, func() bool {
					got := rb.take()
					return len(got) == 1 && strings.HasPrefix(got[0], "body error")
				}, "the service's connection closed mid-body")
			}
		})
	}
	t.Run("response never read", func(t *testing.T) {
		done := make(chan struct{})
		backend := testnet.Serve(t, func(c net.Conn) {
			defer close(done)
			if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
				return
			}
			streamForever(c)
		})
		r := runInbound(t, w, proxy.InboundConfig{Target: backend, Protocol: proxy.HTTP, Limits: shortLimits})
		c := dialH1(t, w, r.addr)
		io.WriteString(c, "GET /ok HTTP/1.1\r\nHost: b\r\n\r\n")
		// Never read: the socket buffers fill and the proxy's writes stall.
		testwait.Eventually(t, func() bool { return r.p.Active() == 0 }, "the connection released")
		timedOut(t, r, "response_write")
		select {
		case <-done:
		case <-time.After(testwait.Deadline):
			t.Fatal("the service's leg is still open")
		}
	})
}

// streamForever answers with a body without end, until a write fails (the
// proxy closed the connection).
func streamForever(c net.Conn) {
	io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
	chunk := []byte(strings.Repeat("x", 64<<10))
	for {
		if _, err := c.Write(chunk); err != nil {
			return
		}
	}
}

// TestHTTP1ServiceTimeouts: a service that takes a request and never
// answers, or answers half a head, costs the client a 504, not its
// connection for ever; one that stops in the middle of a body has the
// client's connection aborted. Either way its own connection is closed.
func TestHTTP1ServiceTimeouts(t *testing.T) {
	w := newWorld(t)
	for _, tt := range []struct {
		name, answer, stage string
		code                int
	}{
		{"silent", "", "service_response", http.StatusGatewayTimeout},
		{"half a head", "HTTP/1.1 200 OK\r\nContent-", "service_response", http.StatusGatewayTimeout},
		{"half a body", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\npart", "service_body", http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			closed := make(chan struct{})
			backend := testnet.Serve(t, func(c net.Conn) {
				defer close(closed)
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, tt.answer)
				io.Copy(io.Discard, br) // until the proxy closes
			})
			r := runInbound(t, w, proxy.InboundConfig{Target: backend, Protocol: proxy.HTTP, Limits: shortLimits})
			c := dialH1(t, w, r.addr)
			io.WriteString(c, "GET /ok HTTP/1.1\r\nHost: b\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("no response: %v", err)
			}
			body, err := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.code {
				t.Fatalf("status %d %q, want %d", resp.StatusCode, body, tt.code)
			}
			if tt.code == http.StatusGatewayTimeout && !strings.Contains(string(body), "did not answer") {
				t.Errorf("504 body %q", body)
			}
			if tt.code == http.StatusOK && (err == nil || os.IsTimeout(err)) {
				t.Errorf("body %q, %v: want the connection aborted", body, err)
			}
			select {
			case <-closed:
			case <-time.After(testwait.Deadline):
				t.Fatal("the service's connection is still open")
			}
			timedOut(t, r, tt.stage)
			if tt.code == http.StatusGatewayTimeout {
				testwait.Eventually(t, func() bool {
					return metricValue(t, r.reg, "mutual_proxy_request_duration_seconds", map[string]string{"code": "504"}) == 1
				}, "the 504 counted as a request")
			}
		})
	}
}

// TestHTTP1ProgressNotCut: a response streamed, or a body uploaded, for
// longer than the idle timeout is not cut while it makes progress. An
// idle connection opened after the stream began, and closed by the proxy,
// shows that the idle timeout has passed.
func TestHTTP1ProgressNotCut(t *testing.T) {
	w := newWorld(t)
	lim := proxy.Limits{HandshakeTimeout: 5 * time.Second, IdleTimeout: time.Second}
	stop := make(chan struct{})
	backend := serveRequests(t, func(c net.Conn, req *http.Request, n int64) bool {
		if req.URL.Path != "/stream" {
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d", len(strconv.FormatInt(n, 10)), n)
			return true
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for open := true; open; {
			select {
			case <-stop:
				open = false
			case <-tick.C:
			}
			if _, err := io.WriteString(c, "9\r\ndata: x\n\n\r\n"); err != nil {
				return false
			}
		}
		io.WriteString(c, "0\r\n\r\n")
		return true
	})
	r := runInbound(t, w, proxy.InboundConfig{Target: backend, Protocol: proxy.HTTP, Limits: lim})
	// idleProbe reports on the channel when the proxy has closed an idle
	// connection opened now: the idle timeout has passed since.
	idleProbe := func() chan error {
		probe := dialH1(t, w, r.addr)
		ch := make(chan error, 1)
		go func() { ch <- closedByProxy(probe) }()
		return ch
	}
	t.Run("stream", func(t *testing.T) {
		c := dialH1(t, w, r.addr)
		io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: b\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		eb := bufio.NewReader(resp.Body)
		probe := idleProbe()
		for waiting := true; waiting; {
			select {
			case err := <-probe:
				if err != nil {
					t.Fatalf("idle probe: %v", err)
				}
				waiting = false
			default:
			}
			if _, err := eb.ReadString('\n'); err != nil {
				t.Fatalf("the stream was cut: %v", err)
			}
		}
		close(stop)
		if _, err := io.Copy(io.Discard, eb); err != nil {
			t.Fatalf("the stream was cut: %v", err)
		}
	})
	t.Run("upload", func(t *testing.T) {
		const pieces, piece = 5000, 20
		c := dialH1(t, w, r.addr)
		fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n\r\n", pieces*piece)
		probe := idleProbe()
		sent := 0
		for waiting := true; waiting; sent++ {
			if sent == pieces {
				t.Fatal("the body was sent before the idle timeout passed: make it longer")
			}
			select {
			case err := <-probe:
				if err != nil {
					t.Fatalf("idle probe: %v", err)
				}
				waiting = false
			case <-time.After(20 * time.Millisecond):
			}
			io.WriteString(c, strings.Repeat("u", piece))
		}
		io.WriteString(c, strings.Repeat("u", (pieces-sent)*piece))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("the upload was cut: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != strconv.Itoa(pieces*piece) {
			t.Fatalf("%d %q, want 200 %d", resp.StatusCode, body, pieces*piece)
		}
	})
}

// TestHTTP1PooledServiceConnections: a pooled connection to the service is
// checked before it carries a request: one the service closed while idle
// is not used for a request that cannot be sent twice (a POST would get a
// 502), and bytes the service sent on it while idle never answer the next
// request, another client's maybe.
func TestHTTP1PooledServiceConnections(t *testing.T) {
	w := newWorld(t)
	idleEnd := make(chan string, 4) // the proxy's port of a connection the service closed
	// /late answers, then sends a second answer nobody asked for when told.
	extra, wrote := make(chan struct{}), make(chan string, 1)
	backend := serveRequests(t, func(c net.Conn, req *http.Request, _ int64) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine")
		_, port, _ := net.SplitHostPort(c.RemoteAddr().String())
		switch req.URL.Path {
		case "/once":
			// A short keep-alive timeout on the service's side.
			c.Close()
			idleEnd <- port
			return false
		case "/late":
			<-extra
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstolen")
			wrote <- port
		}
		return true
	})
	r := runInbound(t, w, proxy.InboundConfig{Target: backend, Protocol: proxy.HTTP})
	client := func() *http.Client {
		tr := &http.Transport{TLSClientConfig: w.clientTLS(w.ca.Leaf(t, webID)), TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 20 * time.Second}
	}
	do := func(c *http.Client, method, path string) (int, string) {
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader("body")
		}
		req, _ := http.NewRequest(method, "https://"+r.addr+path, body)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// A request with a body is checked before it is written; one without
	// is checked with its write (and sent again on a new connection).
	for _, method := range []string{"POST", "GET"} {
		t.Run("closed while idle/"+method, func(t *testing.T) {
			c := client()
			if code, _ := do(c, "GET", "/once"); code != 200 {
				t.Fatalf("first request: %d", code)
			}
			port := <-idleEnd
			// The proxy's end has the service's FIN (CLOSE_WAIT) before the
			// next request.
			testwait.Eventually(t, func() bool { st, _ := tcpState(t, port, backend); return st == "08" }, "the service's close to reach the proxy")
			if code, body := do(c, method, "/next"); code != 200 || body != "fine" {
				t.Fatalf("%s after the service closed its idle connection: %d %q, want 200", method, code, body)
			}
		})
	}
	for _, method := range []string{"POST", "GET"} {
		t.Run("bytes while idle/"+method, func(t *testing.T) {
			if code, _ := do(client(), "GET", "/late"); code != 200 {
				t.Fatalf("first request: %d", code)
			}
			extra <- struct{}{}
			port := <-wrote
			testwait.Eventually(t, func() bool { _, rx := tcpState(t, port, backend); return rx > 0 }, "the unasked bytes to reach the proxy")
			if code, body := do(client(), method, "/next"); code != 200 || body != "fine" {
				t.Fatalf("another client's %s got %d %q, want 200 %q", method, code, body, "fine")
			}
		})
	}
}

// tcpState returns the state (hex, as /proc/net/tcp writes it: 08 is
// CLOSE_WAIT) and receive queue of the IPv4 loopback socket whose local
// port is port, connected to remote (another connection's socket in
// TIME_WAIT may have had the same local port).
func tcpState(t *testing.T, port, remote string) (state string, rxQueue int64) {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	p, _ := strconv.Atoi(port)
	local := fmt.Sprintf("0100007F:%04X", p)
	_, rport, _ := net.SplitHostPort(remote)
	rp, _ := strconv.Atoi(rport)
	peer := fmt.Sprintf("0100007F:%04X", rp)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 4 && f[1] == local && f[2] == peer {
			_, rx, _ := strings.Cut(f[4], ":")
			n, _ := strconv.ParseInt(rx, 16, 64)
			return f[3], n
		}
	}
	return "", 0
}

// TestHTTPFallbackTimeouts: requests served by net/http (HTTP/2 here) have
// the same bounds: a silent service is a 504, a body that stops arriving
// ends the request; both logged and counted.
func TestHTTPFallbackTimeouts(t *testing.T) {
	w := newWorld(t)
	backend := testnet.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		io.Copy(io.Discard, br) // never answers
	})
	r := runInbound(t, w, proxy.InboundConfig{Target: backend, Protocol: proxy.HTTP, Limits: proxy.Limits{HandshakeTimeout: 5 * time.Second, IdleTimeout: time.Second}})
	tr := &http.Transport{TLSClientConfig: w.clientTLS(w.ca.Leaf(t, webID)), ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	t.Run("silent service", func(t *testing.T) {
		resp, err := c.Get("https://" + r.addr + "/ok")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusGatewayTimeout {
			t.Fatalf("%s %d, want HTTP/2 504", resp.Proto, resp.StatusCode)
		}
		testwait.Eventually(t, func() bool {
			return metricValue(t, r.reg, "mutual_proxy_timeouts_total", map[string]string{"stage": "service_response"}) >= 1
		}, "the timeout counted")
	})
	t.Run("body stops", func(t *testing.T) {
		pr, pw := io.Pipe()
		defer pw.Close()
		go io.WriteString(pw, "abc") // then nothing
		resp, err := c.Post("https://"+r.addr+"/ok", "text/plain", pr)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestTimeout {
				t.Fatalf("%d, want 408 or the stream reset\n%s", resp.StatusCode, r.logs.String())
			}
		}
		timedOut(t, r, "request_body")
	})
}

// serveRequests runs an HTTP/1.1 service that reads each request and its
// body (n bytes) and lets answer write the response; answer returns false
// to end the connection.
func serveRequests(t *testing.T, answer func(c net.Conn, req *http.Request, n int64) bool) string {
	return testnet.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			n, err := io.Copy(io.Discard, req.Body)
			if err != nil || !answer(c, req, n) {
				return
			}
		}
	})
}

// TestHTTP1RefusedBodyTrickled: a refused request's body is read only to
// keep the connection, and only within the head's bound: a client that
// trickles it (each byte well within the idle timeout) must not hold the
// connection for as long as it likes.
func TestHTTP1RefusedBodyTrickled(t *testing.T) {
	w := newWorld(t)
	w.policy = okOnly(t)
	rb := newRecordingBackend(t)
	r := runInbound(t, w, proxy.InboundConfig{Target: rb.addr, Protocol: proxy.HTTP,
		Limits: proxy.Limits{HandshakeTimeout: 300 * time.Millisecond, IdleTimeout: time.Hour}})
	c := dialH1(t, w, r.addr)
	io.WriteString(c, "POST /admin HTTP/1.1\r\nHost: b\r\nContent-Length: 100000\r\n\r\n")
	defer trickle(c, "x")()
	if err := closedByProxy(c); err != nil {
		t.Fatal(err)
	}
}

// TestHTTPTimeoutStages: each stall is counted at its own stage on both
// paths (HTTP/1.1 and net/http's, HTTP/2 here): a service that cannot be
// reached in time is service_dial, one that stops taking the request's
// body is service_write, not the wait for its answer; each a 504.
func TestHTTPTimeoutStages(t *testing.T) {
	w := newWorld(t)
	lim := proxy.Limits{HandshakeTimeout: 5 * time.Second, IdleTimeout: time.Second, DialTimeout: 300 * time.Millisecond}
	stop := make(chan struct{})
	deaf := testnet.Serve(t, func(c net.Conn) {
		// Reads the head, never the body.
		if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			<-stop
		}
	})
	t.Cleanup(func() { close(stop) })
	for _, tt := range []struct {
		name, target, stage string
		body                bool
	}{
		{"dial", testnet.FullBacklog(t), "service_dial", false},
		{"request write", deaf, "service_write", true},
	} {
		for _, h2 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/h2=%v", tt.name, h2), func(t *testing.T) {
				r := runInbound(t, w, proxy.InboundConfig{Target: tt.target, Protocol: proxy.HTTP, Limits: lim})
				tr := &http.Transport{TLSClientConfig: w.clientTLS(w.ca.Leaf(t, webID)), ForceAttemptHTTP2: h2}
				if !h2 {
					tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
				}
				defer tr.CloseIdleConnections()
				var body io.Reader
				if tt.body {
					body = io.LimitReader(zeros{}, 1<<30)
				}
				req, _ := http.NewRequest("POST", "https://"+r.addr+"/ok", body)
				if tt.body {
					req.ContentLength = 1 << 30
				}
				resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Do(req)
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusGatewayTimeout {
						t.Fatalf("%s %d, want 504\n%s", resp.Proto, resp.StatusCode, r.logs.String())
					}
				}
				timedOut(t, r, tt.stage)
				if n := metricValue(t, r.reg, "mutual_proxy_timeouts_total", map[string]string{"stage": "service_response"}); n != 0 {
					t.Errorf("also counted as service_response (%v)", n)
				}
			})
		}
	}
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// TestHTTPBodyMinRate: on net/http's path too (HTTP/2 here), a request
// body trickled, each piece well within the idle timeout, must arrive at a
// minimum average rate (TestHTTP1ClientTimeouts has the HTTP/1.1 path's
// case): the request ends, logged and counted as request_body.
func TestHTTPBodyMinRate(t *testing.T) {
	w := newWorld(t)
	t.Run("HTTP/2", func(t *testing.T) {
		rb := newRecordingBackend(t)
		r := runInbound(t, w, proxy.InboundConfig{Target: rb.addr, Protocol: proxy.HTTP, Limits: shortLimits})
		tr := &http.Transport{TLSClientConfig: w.clientTLS(w.ca.Leaf(t, webID)), ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		pr, pw := io.Pipe()
		defer pw.Close()
		stop := trickle(pw, "x")
		defer stop()
		req, _ := http.NewRequest("POST", "https://"+r.addr+"/ok", pr)
		req.ContentLength = 100000
		resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestTimeout {
				t.Fatalf("%s %d, want 408 or the stream reset", resp.Proto, resp.StatusCode)
			}
		}
		timedOut(t, r, "request_body")
	})
}

// TestHTTPFallbackStallsAfterHead: on net/http's path, a service that stops
// in the middle of a body (HTTP/2 here) and a client that stops reading
// its response (an HTTP/1.0 request, which the HTTP/1.1 path hands over)
// are logged and counted at their own stage, as on the HTTP/1.1 path.
func TestHTTPFallbackStallsAfterHead(t *testing.T) {
	w := newWorld(t)
	stop := make(chan struct{})
	backend := testnet.Serve(t, func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		if req.URL.Path == "/half" {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\npart")
			<-stop
			return
		}
		streamForever(c)
	})
	t.Cleanup(func() { close(stop) })
	t.Run("service body", func(t *testing.T) {
		r := runInbound(t, w, proxy.InboundConfig{Target: backend, Protocol: proxy.HTTP, Limits: shortLimits})
		tr := &http.Transport{TLSClientConfig: w.clientTLS(w.ca.Leaf(t, webID)), ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		// The stream is reset, before or after the head reached the client.
		resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Get("https://" + r.addr + "/half")
		if err == nil {
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != 2 || err == nil {
				t.Fatalf("%s %q, %v: want HTTP/2 and the stream reset", resp.Proto, body, err)
			}
		}
		timedOut(t, r, "service_body")
	})
	t.Run("response write", func(t *testing.T) {
		r := runInbound(t, w, proxy.InboundConfig{Target: backend, Protocol: proxy.HTTP, Limits: shortLimits})
		c := dialH1(t, w, r.addr)
		io.WriteString(c, "GET /stream HTTP/1.0\r\nHost: b\r\n\r\n")
		// Never read: the socket buffers fill and the proxy's writes stall.
		timedOut(t, r, "response_write")
	})
}
