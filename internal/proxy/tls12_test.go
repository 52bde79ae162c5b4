package proxy_test

import (
	"bytes"
	"crypto/tls"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testport"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// TestOutboundToTLS12OnlyServerSaysAddTLS12: an outbound proxy (TLS 1.3
// only by default) meeting a server that speaks only TLS 1.2 (OpenSSL's
// s_server -tls1_2, and Go's) refuses, and its log says to add --tls12 or
// upgrade the server.
func TestOutboundToTLS12OnlyServerSaysAddTLS12(t *testing.T) {
	w := newWorld(t)
	servers := map[string]string{"go": goTLS12Server(t, w)}
	if _, err := exec.LookPath("openssl"); err == nil {
		servers["openssl"] = opensslTLS12Server(t, w)
	} else if os.Getenv("CI") != "" {
		t.Fatal("openssl is missing on CI")
	}
	for name, target := range servers {
		t.Run(name, func(t *testing.T) {
			logs := &testlog.Buffer{}
			out := outboundWith(t, w, proxy.OutboundConfig{Target: target, Expect: patterns(t, proxyID)}, logs)
			conn, err := net.DialTimeout("tcp", out.addr, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(30 * time.Second))
			conn.Write([]byte("x"))
			conn.Read(make([]byte, 1)) // the proxy closes the client's leg
			testwait.Eventually(t, func() bool { return logs.Contains("server refused") }, "the refusal logged")
			if !logs.Has("server refused", map[string]any{"reason": "protocol mismatch"}) || !strings.Contains(logs.String(), "add --tls12") ||
				!strings.Contains(logs.String(), "upgrade the server") {
				t.Errorf("the refusal does not say to add --tls12:\n%s", logs)
			}
		})
	}
}

// goTLS12Server is a Go TLS server that speaks TLS 1.2 at most, with the
// proxy's certificate.
func goTLS12Server(t *testing.T, w *world) string {
	t.Helper()
	cfg := &tls.Config{Certificates: []tls.Certificate{w.src.Identity().TLSCertificate()}, MaxVersion: tls.VersionTLS12}
	return testnet.ServeTLS(t, cfg, nil)
}

// opensslTLS12Server runs `openssl s_server -tls1_2` with the proxy's
// certificate until the test ends.
func opensslTLS12Server(t *testing.T, w *world) string {
	t.Helper()
	addr := testport.Addr(t)
	_, port, _ := net.SplitHostPort(addr)
	var stderr bytes.Buffer
	cmd := exec.Command("openssl", "s_server", "-tls1_2", "-accept", port, "-naccept", "10",
		"-cert", filepath.Join(w.dir, "cert.pem"), "-key", filepath.Join(w.dir, "key.pem"), "-quiet")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testnet.WaitListening(t, addr, func() string { return "openssl s_server: " + stderr.String() })
	return addr
}
