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
			rb.record(fmt.Sprintf("%s %s xfcc=%d body=%q", req.Method, req.RequestURI, len(req.Header.Values(proxy.XFCCHeader)), body))
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
	pol, err := authz.Parse([]byte(okOnlyPolicy))
	if err != nil {
		t.Fatal(err)
	}
	w.policy = proxy.StaticPolicy{P: pol}
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
			if n := strings.Count(fmt.Sprint(codes), "200"); n != len(got) {
				t.Errorf("%d responses 200 (%v) but the service read %d requests: %q", n, codes, len(got), got)
			}
		})
	}
}
