package tlsconfig_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/tlsconfig"
)

// swapBundle serves the roots it currently holds.
type swapBundle struct {
	mu    sync.Mutex
	roots []*x509.Certificate
}

func (s *swapBundle) set(r ...*x509.Certificate) { s.mu.Lock(); s.roots = r; s.mu.Unlock() }

func (s *swapBundle) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return x509bundle.FromX509Authorities(td, s.roots), nil
}

type staticSVID struct{ s *x509svid.SVID }

func (s staticSVID) GetX509SVID() (*x509svid.SVID, error) { return s.s, nil }

// TestVerifiedChainCache: repeated handshakes with one client certificate
// reuse the verified chain, yet the revocation check runs every time and a
// change of roots takes effect at once.
func TestVerifiedChainCache(t *testing.T) {
	a, b := testca.New(t), testca.New(t)
	srvID := a.Leaf(t, "spiffe://example.org/ns/prod/db", testca.DNS("localhost"))
	cliID := a.Leaf(t, "spiffe://example.org/ns/prod/web")
	bundle := &swapBundle{}
	bundle.set(a.Root)
	var revoked atomic.Bool
	check := func(id spiffeid.ID, chain []*x509.Certificate) error {
		if revoked.Load() {
			return errors.New("revoked")
		}
		return nil
	}
	svid := staticSVID{&x509svid.SVID{ID: srvID.ID, Certificates: srvID.Chain, PrivateKey: srvID.Key}}
	cfg := tlsconfig.ServerConfig(svid, bundle, tlsconfig.AuthorizeAny(), tlsconfig.WithPeerCheck(check))
	addr := testnet.ServeTLS(t, cfg, func(c *tls.Conn) { c.Write([]byte("x")) })
	dial := func() error {
		c, err := tls.Dial("tcp", addr, &tls.Config{
			Certificates: []tls.Certificate{cliID.TLSCertificate()}, RootCAs: srvID.RootPool(), ServerName: "localhost",
		})
		if err != nil {
			return err
		}
		defer c.Close()
		var one [1]byte
		_, err = c.Read(one[:]) // TLS 1.3: the server's verdict arrives here
		return err
	}
	for i := 0; i < 3; i++ {
		if err := dial(); err != nil {
			t.Fatalf("handshake %d: %v", i, err)
		}
	}
	revoked.Store(true)
	if err := dial(); err == nil {
		t.Fatal("a cached chain skipped the revocation check")
	}
	revoked.Store(false)
	bundle.set(b.Root)
	if err := dial(); err == nil {
		t.Fatal("a cached chain survived a change of roots")
	}
	bundle.set(a.Root)
	if err := dial(); err != nil {
		t.Fatalf("after restoring the roots: %v", err)
	}
}
