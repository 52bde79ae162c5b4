package proxy_test

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/h2guard/h2attack"
	"github.com/mutual-tls/mutual/internal/proxy"
)

// identityHeaderSpellings are names that are not X-Forwarded-Client-Cert to
// Go, but are to a CGI, WSGI or PHP backend, which maps '-' to '_' and folds
// case (HTTP_X_FORWARDED_CLIENT_CERT).
var identityHeaderSpellings = []string{
	"X_Forwarded_Client_Cert",
	"x_forwarded_client_cert",
	"X_FORWARDED_CLIENT_CERT",
	"X-Forwarded_Client-Cert",
	"x-forwarded-client_cert",
}

// normalHeader folds a header name the way CGI does, and then some: case
// and every non-alphanumeric character.
func normalHeader(k string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case 'a' <= r && r <= 'z' || '0' <= r && r <= '9':
			return r
		case 'A' <= r && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '-'
	}, k)
}

// cgiBackend is a real CGI backend (net/http/cgi running sh): it answers
// with the identity header as a CGI program reads it, from the environment.
func cgiBackend(t *testing.T) string {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI needs sh for the CGI backend: %v", err)
		}
		t.Skipf("no sh for a CGI backend: %v", err)
	}
	h := &cgi.Handler{Path: sh, Args: []string{"-c", `printf 'Content-Type: text/plain\r\n\r\n%s' "$HTTP_X_FORWARDED_CLIENT_CERT"`}}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// rawHTTP1 sends one HTTP/1.1 request written by hand (plaintext when cfg
// is nil) and returns the response status and body.
func rawHTTP1(t *testing.T, addr string, cfg *tls.Config, target string, headers ...string) (int, string) {
	t.Helper()
	var c net.Conn
	var err error
	if cfg != nil {
		cfg = cfg.Clone()
		cfg.NextProtos = []string{"http/1.1"}
		c, err = tls.Dial("tcp", addr, cfg)
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n", target)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestInboundIdentityHeaderUnderscores: X_Forwarded_Client_Cert and the
// like pass Go's header handling as other headers, but a CGI backend reads
// them as the identity header. Sent by a plaintext client in permissive
// mode, one made it spiffe://TD/admin/operator. Through a real proxy to a
// CGI backend and to a backend that records every header, no spelling of
// the identity header but the proxy's own may arrive.
func TestInboundIdentityHeaderUnderscores(t *testing.T) {
	w := newWorld(t)
	client := w.ca.Leaf(t, webID)
	const evil = "URI=spiffe://example.org/admin/operator"
	backends := map[string]string{"cgi": cgiBackend(t), "go": httpBackend(t)}
	for _, kind := range []string{"cgi", "go"} {
		r := runInbound(t, w, proxy.InboundConfig{Target: backends[kind], Protocol: proxy.HTTP, Mode: proxy.Permissive})
		for _, name := range identityHeaderSpellings {
			for _, withCert := range []bool{false, true} {
				who := "plaintext"
				var cfg *tls.Config
				if withCert {
					who, cfg = "certificate", w.clientTLS(client)
				}
				t.Run(kind+"/"+who+"/"+name, func(t *testing.T) {
					code, body := rawHTTP1(t, r.addr, cfg, "/whoami", name+": "+evil, "X_Forwarded_For: 203.0.113.66")
					if code != http.StatusOK {
						t.Fatalf("request = %d %q", code, body)
					}
					var got []string
					if kind == "cgi" {
						if body != "" {
							got = []string{body}
						}
					} else {
						var s seen
						if err := json.Unmarshal([]byte(body), &s); err != nil {
							t.Fatal(err)
						}
						for k, v := range s.Header {
							switch normalHeader(k) {
							case "x-forwarded-client-cert":
								got = append(got, v...)
							case "x-forwarded-for":
								if strings.Contains(strings.Join(v, ","), "203.0.113.66") {
									t.Errorf("the client's X_Forwarded_For reached the backend as %s: %q", k, v)
								}
							}
						}
					}
					for _, v := range got {
						if strings.Contains(v, "admin/operator") {
							t.Fatalf("%s header %s: %q reached the %s backend as the caller's identity", who, name, v, kind)
						}
					}
					switch {
					case !withCert && len(got) != 0:
						t.Errorf("a client without a certificate reached the %s backend with identity %q", kind, got)
					case withCert && (len(got) != 1 || !strings.Contains(got[0], "URI="+webID)):
						t.Errorf("the %s backend read identity %q; want only the proxy's, URI=%s", kind, got, webID)
					}
				})
			}
		}
	}
}

// pathPolicy allows the reader role /public and /metrics only.
func pathPolicy(t *testing.T) proxy.PolicySource {
	t.Helper()
	p, err := authz.Parse([]byte("rules:\n  - roles: [reader]\n    paths: [/public, /metrics]\n"))
	if err != nil {
		t.Fatal(err)
	}
	return proxy.StaticPolicy{P: p}
}

// countingBackend answers every request with the JSON seen and counts them.
type countingBackend struct {
	addr string
	mu   sync.Mutex
	got  []string // raw request targets
}

func newCountingBackend(t *testing.T) *countingBackend {
	b := &countingBackend{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.got = append(b.got, r.RequestURI)
		b.mu.Unlock()
		json.NewEncoder(w).Encode(seen{Method: r.Method, Path: r.URL.Path, Proto: r.Proto})
	}))
	t.Cleanup(srv.Close)
	b.addr = srv.Listener.Addr().String()
	return b
}

func (b *countingBackend) requests() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.got...)
}

// TestInboundPathConfusionRefused: a rule for /public must not let through
// a path that the service reads as /admin. Each attack is sent through a
// real proxy over HTTP/1.1 and HTTP/2 (the :path pseudo-header as written)
// and must be answered 400 without reaching the backend; ordinary paths
// still pass.
func TestInboundPathConfusionRefused(t *testing.T) {
	w := newWorld(t)
	be := newCountingBackend(t)
	r := runInbound(t, w, proxy.InboundConfig{Target: be.addr, Protocol: proxy.HTTP, Policy: pathPolicy(t)})
	reader := leafWithRoles(t, w.ca, auditorID, "reader")
	attacks := []string{
		"/public/..;/admin",
		"/public/..;x=1/admin",
		"/public;/../admin",
		"/public/%252e%252e/admin",
		"/public/..%252fadmin",
		"/public/%25252e%25252e/admin",
		"/public/%c0%ae%c0%ae/admin",
		"/public/%c0%ae%c0%ae%c0%afadmin",
		"/public/%e0%80%ae%e0%80%ae/admin",
		"/public/%ef%bc%8e%ef%bc%8e/admin",
		"/public/..%ef%bc%8fadmin",
		"/public%2fadmin",
		"/public/..%2fadmin",
		"/public/..%5cadmin",
		`/public/..\admin`,
		`/public\..\admin`,
		"/public/../admin",
		"/public//admin",
		"/public/...",
		"/public/..%20/admin",
		"/public/x%00/admin",
		"/public/%ff",
		"/public/;x/../admin",
	}
	for _, target := range attacks {
		t.Run("http1"+target, func(t *testing.T) {
			code, body := rawHTTP1(t, r.addr, w.clientTLS(reader), target)
			if code != http.StatusBadRequest {
				t.Errorf("GET %s = %d %q; want 400", target, code, body)
			}
		})
		t.Run("http2"+target, func(t *testing.T) {
			h, err := h2attack.Dial(r.addr, w.clientTLS(reader))
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			status, err := h.Get(target)
			if err != nil {
				t.Fatal(err)
			}
			if status != "400" {
				t.Errorf("GET %s over HTTP/2 = %s; want 400", target, status)
			}
		})
	}
	if got := be.requests(); len(got) != 0 {
		t.Fatalf("the backend received %q", got)
	}
	for _, tt := range []struct {
		target string
		want   int
	}{
		{"/public", 200},
		{"/public/a;v=1/b", 200},
		{"/public/caf%C3%A9", 200},
		{"/public/100%25.txt", 200},
		{"/admin", 403},
		{"/publicity", 403},
	} {
		code, body := rawHTTP1(t, r.addr, w.clientTLS(reader), tt.target)
		if code != tt.want {
			t.Errorf("GET %s = %d %q; want %d", tt.target, code, body, tt.want)
		}
	}
	if got, want := be.requests(), []string{"/public", "/public/a;v=1/b", "/public/caf%C3%A9", "/public/100%25.txt"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("the backend received %q; want %q, as sent", got, want)
	}
	if !r.logs.Has("request", map[string]any{"outcome": "refused", "status": 400.0, "path": "/public/..;/admin"}) {
		t.Errorf("no refused request log line for /public/..;/admin in:\n%s", r.logs)
	}
}

// TestInboundPathRuleSegmentBoundary: the README's rule "/metrics" allows
// /metrics and what lies below it, not /metrics-secret-admin.
func TestInboundPathRuleSegmentBoundary(t *testing.T) {
	w := newWorld(t)
	r := runInbound(t, w, proxy.InboundConfig{Target: httpBackend(t), Protocol: proxy.HTTP, Policy: pathPolicy(t)})
	c := httpClient(t, w.clientTLS(leafWithRoles(t, w.ca, auditorID, "reader")))
	for _, tt := range []struct {
		path string
		want int
	}{
		{"/metrics", 200},
		{"/metrics/cpu", 200},
		{"/metrics-secret-admin", 403},
		{"/metricsadmin", 403},
		{"/public-admin/x", 403},
	} {
		res := doRequest(c, "GET", "https://"+r.addr+tt.path, nil)
		if res.err != nil || res.code != tt.want {
			t.Errorf("GET %s = %d %q, %v; want %d", tt.path, res.code, res.body, res.err, tt.want)
		}
	}
}
