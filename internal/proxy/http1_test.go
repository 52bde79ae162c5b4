package proxy_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testnet"
)

// recordingBackend is an HTTP/1.1 service that reads requests with Go's
// parser, as a service behind the proxy would, and records each one's
// method, target and body (or the parse error) before answering 200 with
// the number of requests it has read so far on that connection.
type recordingBackend struct {
	addr string
	mu   sync.Mutex
	got  []string
}

func newRecordingBackend(t *testing.T) *recordingBackend {
	rb := &recordingBackend{}
	rb.addr = testnet.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for n := 1; ; n++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				if err != io.EOF {
					rb.record("parse error: " + err.Error())
				}
				return
			}
			body, err := io.ReadAll(req.Body)
			if err != nil {
				rb.record("body error: " + err.Error())
				return
			}
			rb.record(fmt.Sprintf("%s %s xfcc=%d len=%d body=%q", req.Method, req.RequestURI, len(req.Header.Values(proxy.XFCCHeader)), len(body), body[:min(len(body), 64)]))
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d", len(fmt.Sprint(n)), n)
		}
	})
	return rb
}

func (rb *recordingBackend) record(s string) {
	rb.mu.Lock()
	rb.got = append(rb.got, s)
	rb.mu.Unlock()
}

func (rb *recordingBackend) take() []string {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	got := rb.got
	rb.got = nil
	return got
}

// okOnly is okOnlyPolicy as the proxy's policy.
func okOnly(t *testing.T) proxy.PolicySource {
	t.Helper()
	pol, err := authz.Parse([]byte(okOnlyPolicy))
	if err != nil {
		t.Fatal(err)
	}
	return proxy.StaticPolicy{P: pol}
}

// okOnlyPolicy allows webID the paths under /ok/ only.
const okOnlyPolicy = `
rules:
  - ids: ["` + webID + `"]
    paths: ["/ok/"]
`

// sendRaw writes raw bytes on one HTTP/1.1 mTLS connection and returns the
// status codes of the responses read until the proxy closes it or stops
// answering.
func sendRaw(t *testing.T, pp *pipeProxy, cfg *tls.Config, raw string) []int {
	t.Helper()
	c, err := pp.ln.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, cfg)
	// An I/O bound, not an assertion: a request the proxy is waiting to
	// complete is never answered.
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	go io.WriteString(tc, raw)
	br := bufio.NewReader(tc)
	var codes []int
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return codes
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
	}
}

// TestHTTP1Smuggling: through the proxy's HTTP/1.1 path (and the
// connections it hands to http.Server), whatever the framing tricks, the
// service only ever reads requests the proxy authorized, with the
// proxy's identity header: never one for a path the policy refuses, never
// a request the proxy took for a body, never a body it took for a request.
func TestHTTP1Smuggling(t *testing.T) {
	w := newWorld(t)
	w.policy = okOnly(t)
	rb := newRecordingBackend(t)
	// Short limits so that each case ends when the proxy closes the idle
	// (or stuck) connection.
	pp := runPipeProxy(t, w, proxy.InboundConfig{Target: rb.addr, Protocol: proxy.HTTP,
		Limits: proxy.Limits{IdleTimeout: time.Second, HandshakeTimeout: 2 * time.Second}})
	cfg := w.clientTLS(w.ca.Leaf(t, webID), "http/1.1")
	cfg.ServerName = "localhost"
	const admin = "GET /admin HTTP/1.1\r\nHost: b\r\n\r\n"
	withBody := func(head, body string) string {
		return fmt.Sprintf(head, len(body)) + body
	}
	for _, tt := range []struct {
		name string
		raw  string
		want []int // the responses, when the case pins them
	}{
		{"control", "GET /ok/a HTTP/1.1\r\nHost: b\r\n\r\n", []int{200}},
		{"pipelined refusal", "GET /ok/a HTTP/1.1\r\nHost: b\r\n\r\n" + admin, []int{200, 403}},
		{"CL then TE", "POST /ok/a HTTP/1.1\r\nHost: b\r\nContent-Length: 35\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + admin, nil},
		{"TE then CL", "POST /ok/a HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\nContent-Length: 35\r\n\r\n0\r\n\r\n" + admin, nil},
		{"two CL", "POST /ok/a HTTP/1.1\r\nHost: b\r\nContent-Length: 0\r\nContent-Length: 35\r\n\r\n" + admin, nil},
		{"CL list", "POST /ok/a HTTP/1.1\r\nHost: b\r\nContent-Length: 0, 35\r\n\r\n" + admin, nil},
		{"CL plus", "POST /ok/a HTTP/1.1\r\nHost: b\r\nContent-Length: +35\r\n\r\n" + admin, nil},
		{"CL hex", "POST /ok/a HTTP/1.1\r\nHost: b\r\nContent-Length: 0x23\r\n\r\n" + admin, nil},
		{"TE folded", "POST /ok/a HTTP/1.1\r\nHost: b\r\nContent-Length: 35\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + admin, nil},
		{"TE space before colon", "POST /ok/a HTTP/1.1\r\nHost: b\r\nContent-Length: 35\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + admin, nil},
		{"TE xchunked", "POST /ok/a HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + admin, nil},
		{"TE chunked identity", "POST /ok/a HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + admin, nil},
		{"chunked body", "POST /ok/a HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + admin, []int{200, 403}},
		{"bare LF", "GET /ok/a HTTP/1.1\nHost: b\n\nGET /admin HTTP/1.1\nHost: b\n\n", nil},
		{"bare CR", "GET /ok/a HTTP/1.1\r\nHost: b\r\nX-A: a\rGET /admin HTTP/1.1\r\n\r\n", nil},
		{"NUL in value", "GET /ok/a HTTP/1.1\r\nHost: b\r\nX-A: a\x00b\r\n\r\n" + admin, nil},
		{"leading CRLF", "\r\nGET /ok/a HTTP/1.1\r\nHost: b\r\n\r\n" + admin, nil},
		{"absolute form", "GET http://b/admin HTTP/1.1\r\nHost: b\r\n\r\n", []int{403}},
		{"absolute form ok", "GET http://b/ok/a HTTP/1.1\r\nHost: b\r\n\r\n" + admin, []int{200, 403}},
		{"dot segments", "GET /ok/../admin HTTP/1.1\r\nHost: b\r\n\r\n", []int{400}},
		{"encoded dot segments", "GET /ok/%2e%2e/admin HTTP/1.1\r\nHost: b\r\n\r\n", []int{400}},
		{"body holds a request", withBody("POST /ok/a HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n\r\n", admin), []int{200}},
		{"Connection names Content-Length", withBody("POST /ok/a HTTP/1.1\r\nHost: b\r\nConnection: Content-Length\r\nContent-Length: %d\r\n\r\n", admin), []int{200}},
		{"Connection names Host", "GET /ok/a HTTP/1.1\r\nHost: b\r\nConnection: Host, Transfer-Encoding\r\n\r\n" + admin, []int{200, 403}},
		{"HTTP/1.0 keep-alive", "GET /ok/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /admin HTTP/1.0\r\n\r\n", nil},
		{"Expect", "POST /ok/a HTTP/1.1\r\nHost: b\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi" + admin, []int{100, 200, 403}},
		{"two Hosts", "GET /ok/a HTTP/1.1\r\nHost: b\r\nHost: c\r\n\r\n" + admin, []int{400}},
		{"no Host", "GET /ok/a HTTP/1.1\r\n\r\n" + admin, []int{400}},
		{"large head", "GET /ok/a HTTP/1.1\r\nHost: b\r\nX-Big: " + strings.Repeat("x", 6000) + "\r\n\r\n" + admin, []int{200, 403}},
		{"head split over the buffer", "GET /ok/a HTTP/1.1\r\nHost: b\r\nX-Big: " + strings.Repeat("x", 4040) + "\r\n\r\n" + admin, []int{200, 403}},
		{"hash in the path", "GET /ok/#/admin HTTP/1.1\r\nHost: b\r\n\r\n", []int{200}},
		{"large body", withBody("POST /ok/big HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n\r\n", strings.Repeat("b", 100000)) + admin, []int{200, 403}},
		{"Upgrade", "GET /ok/a HTTP/1.1\r\nHost: b\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n" + admin, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			codes := sendRaw(t, pp, cfg, tt.raw)
			pp.released(t)
			if tt.want != nil && fmt.Sprint(codes) != fmt.Sprint(tt.want) {
				t.Errorf("responses %v, want %v", codes, tt.want)
			}
			got := rb.take()
			for _, g := range got {
				f := strings.Fields(g)
				if len(f) < 3 || !strings.HasPrefix(f[1], "/ok/") || f[2] != "xfcc=1" {
					t.Errorf("the service read %q", g)
				}
			}
			if tt.name == "hash in the path" && (len(got) != 1 || !strings.HasPrefix(got[0], "GET /ok/%23/admin ")) {
				t.Errorf("the service read %q, want the path with its '#' encoded, as it was authorized", got)
			}
			if tt.name == "large body" && (len(got) != 1 || !strings.HasPrefix(got[0], "POST /ok/big xfcc=1 len=100000 ")) {
				t.Errorf("the service read %q, want the whole 100000-byte body", got)
			}
			if n := strings.Count(fmt.Sprint(codes), "200"); n != len(got) {
				t.Errorf("%d responses 200 (%v) but the service read %d requests: %q", n, codes, len(got), got)
			}
		})
	}
}

// rawResponses answer each path with the bytes written here, as a service
// may send them.
var rawResponses = map[string]string{
	"/chunked":   "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\nContent-Type: text/plain\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: done\r\n\r\n",
	"/close":     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the service closes",
	"/head":      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 42\r\n\r\n",
	"/nocontent": "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
	"/early":     "HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
	"/sniff":     "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n<html>hi</html>",
	"/hop":       "HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
	"/switch":    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
	"/short":     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nonly this",
	// Bytes past the response's end, which must not answer the next request.
	"/extra":    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstolen",
	"/headbody": "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstolen",
	"/fine":     "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine",
}

// TestHTTP1Responses: the HTTP/1.1 path relays what services send as the
// reverse proxy did: chunked bodies with their trailers, bodies ended by
// the service's close, bodiless HEAD and 204 answers, 1xx before the final
// answer, a sniffed Content-Type, no hop-by-hop header; a 101 nobody asked
// for is a 502 and a body cut short aborts the client's connection.
func TestHTTP1Responses(t *testing.T) {
	w := newWorld(t)
	backend := serveRequests(t, func(c net.Conn, req *http.Request, _ int64) bool {
		io.WriteString(c, rawResponses[req.URL.Path])
		return req.URL.Path != "/close" && req.URL.Path != "/switch" && req.URL.Path != "/short"
	})
	r := runInbound(t, w, proxy.InboundConfig{Target: backend, Protocol: proxy.HTTP})
	tr := &http.Transport{TLSClientConfig: w.clientTLS(w.ca.Leaf(t, webID)), TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	get := func(method, path string) (*http.Response, string, error) {
		req, _ := http.NewRequest(method, "https://"+r.addr+path, nil)
		resp, err := c.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, string(b), err
	}
	for _, tt := range []struct {
		method, path string
		code         int
		body         string
		check        func(*http.Response) string
	}{
		{"GET", "/chunked", 200, "hello world", func(r *http.Response) string {
			if r.Trailer.Get("X-T") != "done" {
				return fmt.Sprintf("trailer %q", r.Trailer)
			}
			return ""
		}},
		{"GET", "/close", 200, "until the service closes", nil},
		{"HEAD", "/head", 200, "", func(r *http.Response) string {
			if r.ContentLength != 42 {
				return fmt.Sprintf("Content-Length %d, want 42", r.ContentLength)
			}
			return ""
		}},
		{"GET", "/nocontent", 204, "", func(r *http.Response) string {
			if r.Header.Get("X-A") != "1" {
				return "X-A lost"
			}
			return ""
		}},
		{"GET", "/early", 200, "ok", nil},
		{"GET", "/sniff", 200, "<html>hi</html>", func(r *http.Response) string {
			if ct := r.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
				return "Content-Type " + ct
			}
			return ""
		}},
		{"GET", "/hop", 200, "ok", func(r *http.Response) string {
			if r.Header.Get("X-Secret") != "" || r.Header.Get("Keep-Alive") != "" {
				return fmt.Sprintf("hop-by-hop headers reached the client: %q", r.Header)
			}
			return ""
		}},
		{"GET", "/switch", 502, "", nil},
	} {
		t.Run(tt.method+tt.path, func(t *testing.T) {
			resp, body, err := get(tt.method, tt.path)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.code || tt.code == 200 && body != tt.body {
				t.Fatalf("%d %q, want %d %q", resp.StatusCode, body, tt.code, tt.body)
			}
			if tt.check != nil {
				if msg := tt.check(resp); msg != "" {
					t.Error(msg)
				}
			}
		})
	}
	t.Run("cut short", func(t *testing.T) {
		if _, _, err := get("GET", "/short"); err == nil {
			t.Fatal("a body the service cut short reached the client whole")
		}
	})
	// A service's bytes past its response (a body on a HEAD answer, a
	// second response) must not answer the next request on that pooled
	// connection, maybe another client's: it is closed, as http.Transport does.
	t.Run("unsolicited bytes", func(t *testing.T) {
		for _, first := range []string{"GET /extra", "HEAD /headbody"} {
			method, path, _ := strings.Cut(first, " ")
			if _, _, err := get(method, path); err != nil {
				t.Fatal(err)
			}
			if resp, body, err := get("GET", "/fine"); err != nil || resp.StatusCode != 200 || body != "fine" {
				t.Errorf("after %s, the next request got %v %q, want 200 %q", first, err, body, "fine")
			}
		}
	})
}

// TestHTTPRequestLogSampled: past RequestLogLimit forwarded requests a
// second are only counted (the last count when the proxy stops), but every
// refusal is logged.
func TestHTTPRequestLogSampled(t *testing.T) {
	w := newWorld(t)
	log, logs := testlog.NewJSON(t, "proxy")
	r := runInbound(t, w, proxy.InboundConfig{Target: httpBackend(t), Protocol: proxy.HTTP, RequestLogLimit: 1, Log: log})
	tr := &http.Transport{TLSClientConfig: w.clientTLS(w.ca.Leaf(t, webID)), TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	// One line a second: all 40 would be logged only if they took 40
	// seconds on loopback.
	const forwarded, refused = 40, 3
	for i := range forwarded + refused {
		path := "/ok"
		if i < refused {
			path = "/a/../b" // refused: dot segments
		}
		if res := doRequest(c, "GET", "https://"+r.addr+path, nil); res.err != nil {
			t.Fatal(res.err)
		}
	}
	r.stop(t)
	var logged, counted, refusals int
	for _, l := range logs.Records() {
		switch {
		case l["msg"] == "request" && l["outcome"] == "forwarded":
			logged++
		case l["msg"] == "request" && l["outcome"] == "refused":
			refusals++
		case l["msg"] == "requests not logged":
			n, _ := l["count"].(float64)
			counted += int(n)
		}
	}
	if refusals != refused {
		t.Errorf("%d refusals logged, want all %d", refusals, refused)
	}
	// The last second's count is logged when the proxy stops, so every
	// request is logged or counted.
	if logged < 1 || logged >= forwarded || logged+counted != forwarded {
		t.Errorf("%d forwarded requests logged and %d counted as not logged, of %d: want at least one logged and every one logged or counted", logged, counted, forwarded)
	}
}
