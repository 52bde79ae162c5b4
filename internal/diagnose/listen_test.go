package diagnose_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/diagnose"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// runListen runs diagnose.Listen (mutual diagnose --listen) for f's server
// identity, trusting a, and returns its address and what it writes to out.
func runListen(t *testing.T, f *fixture) (string, *syncBuffer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- diagnose.Listen(ctx, ln, f.server.TLSCertificate(), []*x509.Certificate{f.a.Root}, out)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Listen: %v", err)
		}
	})
	return ln.Addr().String(), out
}

// TestListen: a client connecting to `mutual diagnose --listen` is told
// what is wrong with its certificate, over the connection (plain text, or
// HTTP for an HTTP client) and on the server's output.
func TestListen(t *testing.T) {
	f := newFixture(t)
	addr, out := runListen(t, f)
	expired := f.a.Leaf(t, webID, testca.Expired())
	foreign := f.b.Leaf(t, "spiffe://other.org/ns/prod/web")
	cases := []struct {
		name    string
		cert    *tls.Certificate
		ok      bool
		words   []string
		version uint16
	}{
		{"expired", ptr(expired.TLSCertificate()), false, []string{"expired", webID}, tls.VersionTLS13},
		{"another CA", ptr(foreign.TLSCertificate()), false, []string{"does not trust", "other.org root CA"}, tls.VersionTLS13},
		{"no intermediate", ptr(leafOnly(f.client)), false, []string{"without its intermediate", "full chain"}, tls.VersionTLS13},
		{"no certificate", nil, false, []string{"no client certificate"}, tls.VersionTLS13},
		{"wrong usage", ptr(f.a.Leaf(t, webID, testca.ServerOnly()).TLSCertificate()), false, []string{"clientAuth"}, tls.VersionTLS13},
		{"good", ptr(f.client.TLSCertificate()), true, []string{"verifies", webID}, tls.VersionTLS13},
		{"good TLS 1.2", ptr(f.client.TLSCertificate()), true, []string{"verifies"}, tls.VersionTLS12},
		{"expired TLS 1.2", ptr(expired.TLSCertificate()), false, []string{"expired"}, tls.VersionTLS12},
	}
	for _, c := range cases {
		for _, viaHTTP := range []bool{false, true} {
			name := c.name
			if viaHTTP {
				name += "/http"
			}
			t.Run(name, func(t *testing.T) {
				cfg := &tls.Config{RootCAs: pool(f.a.Root), MinVersion: c.version, MaxVersion: c.version}
				if c.cert != nil {
					cfg.Certificates = []tls.Certificate{*c.cert}
				}
				conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(20 * time.Second))
				local := conn.LocalAddr().String()
				var answer string
				if viaHTTP {
					fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
					resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					answer = string(b)
					want := http.StatusForbidden
					if c.ok {
						want = http.StatusOK
					}
					if resp.StatusCode != want {
						t.Errorf("HTTP %d, want %d: %s", resp.StatusCode, want, answer)
					}
				} else {
					b, err := io.ReadAll(conn)
					if err != nil && !errors.Is(err, io.EOF) {
						t.Fatalf("reading the answer: %v (got %q)", err, b)
					}
					answer = string(b)
				}
				verdict := "REFUSED"
				if c.ok {
					verdict = "OK"
				}
				if !strings.HasPrefix(answer, "mutual diagnose: "+verdict+": ") {
					t.Errorf("answer %q, want the verdict %s", answer, verdict)
				}
				for _, w := range c.words {
					if !strings.Contains(answer, w) {
						t.Errorf("the answer does not say %q: %q", w, answer)
					}
				}
				// The server's own output names the same client and verdict.
				var line string
				for range 200 {
					for _, l := range strings.Split(out.String(), "\n") {
						if strings.HasPrefix(l, local+": ") {
							line = l
						}
					}
					if line != "" {
						break
					}
					time.Sleep(10 * time.Millisecond)
				}
				if !strings.HasPrefix(line, local+": "+verdict+": ") {
					t.Errorf("output line for %s: %q, want verdict %s\nall output:\n%s", local, line, verdict, out.String())
				}
				for _, w := range c.words {
					if !strings.Contains(line, w) {
						t.Errorf("the output line does not say %q: %q", w, line)
					}
				}
			})
		}
	}
}

// TestListenHandshakeFailure: a client that cannot even complete the
// handshake (it does not trust the listener) is reported on the output.
func TestListenHandshakeFailure(t *testing.T) {
	f := newFixture(t)
	addr, out := runListen(t, f)
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool(f.b.Root), ServerName: "127.0.0.1"})
	if err == nil {
		conn.Close()
		t.Fatal("a client that trusts another CA completed the handshake")
	}
	testwait.Eventually(t, func() bool {
		return strings.Contains(out.String(), "handshake failed before any certificate was seen")
	}, "the handshake failure reported on the output")
}

func ptr[T any](v T) *T { return &v }
