package diagnose_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testca"
)

// Identities of the corpus.
const (
	apiID   = "spiffe://example.org/ns/prod/api" // the servers
	webID   = "spiffe://example.org/ns/prod/web" // the client
	dbID    = "spiffe://example.org/ns/prod/db"  // someone else
	otherID = "spiffe://other.org/ns/prod/api"   // a server of another trust domain
)

// serveTCP runs handle for each connection accepted on a fresh loopback
// listener and returns its address; everything stops at the end of the test.
func serveTCP(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	go func() {
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
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// serveTLS runs a crypto/tls server with cfg; wrap, when set, wraps each
// raw connection first (to rewrite what the server sends). A connection
// whose handshake completes is read until the client leaves.
func serveTLS(t testing.TB, cfg *tls.Config, wrap func(net.Conn) net.Conn) string {
	t.Helper()
	return serveTCP(t, func(c net.Conn) {
		if wrap != nil {
			c = wrap(c)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err != nil {
			return
		}
		io.Copy(io.Discard, tc)
	})
}

// closedPort returns a loopback address where nothing listens.
func closedPort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// issue makes a leaf of ca for id with extra changes to the template (what
// testca's options do not cover).
func issue(t testing.TB, ca *testca.CA, id string, extra func(*x509.Certificate)) *identity.Identity {
	t.Helper()
	key, err := pki.GenerateKey(pki.KeyECDSAP256, nil)
	if err != nil {
		t.Fatal(err)
	}
	sid := spiffeid.RequireFromString(id)
	tmpl, err := ca.Issuer.Template(pki.Leaf{ID: sid, PublicKey: key.Public(), TTL: time.Hour, Now: time.Now(),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	if extra != nil {
		extra(tmpl)
	}
	cert, err := ca.Issuer.Sign(tmpl, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return &identity.Identity{ID: sid, Chain: []*x509.Certificate{cert, ca.Issuer.Cert}, Key: key, Roots: []*x509.Certificate{ca.Root}}
}

// leafOnly is id's TLS certificate without its intermediate.
func leafOnly(id *identity.Identity) tls.Certificate {
	c := id.TLSCertificate()
	c.Certificate = c.Certificate[:1]
	return c
}

func pool(certs ...*x509.Certificate) *x509.CertPool { return pki.CertPool(certs) }

// alertRewriter rewrites the plaintext TLS 1.2 alert record "bad
// certificate" the server sends into another alert: crypto/tls can only
// send bad_certificate for a refused client certificate, other servers
// (OpenSSL, a CRL-checking nginx) send revoked, access denied, ...
type alertRewriter struct {
	net.Conn
	to byte
}

var badCertAlert12 = []byte{21, 3, 3, 0, 2, 2, 42}

func (a alertRewriter) Write(b []byte) (int, error) {
	if i := bytes.Index(b, badCertAlert12); i >= 0 {
		cp := append([]byte(nil), b...)
		cp[i+6] = a.to
		return a.Conn.Write(cp)
	}
	return a.Conn.Write(b)
}

// runProxy runs a real mutual inbound proxy for server (an identity of
// ca) in front of target, allowing allow, and returns its address.
func runProxy(t testing.TB, server *identity.Identity, cfg proxy.InboundConfig, allow ...string) string {
	t.Helper()
	pol, err := authz.FromPatterns(allow)
	if err != nil {
		t.Fatal(err)
	}
	return runProxyPolicy(t, server, cfg, pol)
}

// runProxyPolicy runs a real mutual inbound proxy with the policy pol.
func runProxyPolicy(t testing.TB, server *identity.Identity, cfg proxy.InboundConfig, pol *authz.Policy) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "proxy")
	if err := server.Save(dir); err != nil {
		t.Fatal(err)
	}
	src, err := identity.NewDirSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.SVID, cfg.Bundle, cfg.Policy = src, src, proxy.StaticPolicy{P: pol}
	cfg.Limits.DrainTimeout = time.Second
	p, err := proxy.NewInbound(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("proxy Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// echoBackend is a plaintext TCP service that echoes.
func echoBackend(t testing.TB) string {
	return serveTCP(t, func(c net.Conn) { io.Copy(c, c) })
}

// httpBackend is a plaintext HTTP service that says hello.
func httpBackend(t testing.TB) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello\n") }))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// syncBuffer is a writer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// execCommand runs a real tool and returns its combined output.
func execCommand(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}
