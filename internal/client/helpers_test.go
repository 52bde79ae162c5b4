package client_test

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/token"
)

// withURLs rewrites the CA addresses a token carries (they are not secret
// and not authenticated: an attacker who holds an address gets the token
// sent there).
func withURLs(t testing.TB, tok string, urls ...string) string {
	t.Helper()
	p, err := token.Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	p.CAURLs = urls
	return p.String()
}

// impostor is an HTTPS server presenting cert (a workload's, with the CA's
// host name), recording every request that reaches it.
type impostor struct {
	URL      string
	requests atomic.Int64
}

func startImpostor(t testing.TB, id *identity.Identity) *impostor {
	t.Helper()
	tc := id.TLSCertificate()
	// Present the root too, as the CA does, so that a client fetching the
	// root by the token's fingerprint finds it.
	for _, r := range id.Roots {
		tc.Certificate = append(tc.Certificate, r.Raw)
	}
	im := &impostor{}
	im.URL = testnet.ServeHTTPS(t, &tls.Config{Certificates: []tls.Certificate{tc}, ClientAuth: tls.RequestClientCert},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			im.requests.Add(1)
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"error":"stolen","code":"stolen"}`)
		}))
	return im
}

// relay forwards TCP connections to target; before each chunk from the
// target to the client it asks cut, and when cut says so it closes both
// sides and every later connection: an answer lost after the CA acted on
// the request (a failover, a dropped link).
type relay struct {
	URL    string
	cut    func() bool
	mu     sync.Mutex
	conns  []net.Conn
	broken atomic.Bool
}

func startRelay(t testing.TB, target string, cut func() bool) *relay {
	t.Helper()
	r := &relay{cut: cut}
	r.URL = "https://" + testnet.Serve(t, func(c net.Conn) {
		if r.broken.Load() {
			return
		}
		s, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer s.Close()
		r.mu.Lock()
		r.conns = append(r.conns, c, s)
		r.mu.Unlock()
		up := make(chan struct{})
		go func() { defer close(up); io.Copy(s, c); s.Close() }()
		defer func() { c.Close(); <-up }()
		buf := make([]byte, 32<<10)
		for {
			n, err := s.Read(buf)
			if n > 0 {
				if r.broken.Load() || r.cut() {
					r.broken.Store(true)
					r.closeAll()
					return
				}
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
	return r
}

func (r *relay) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = nil
}
