package tlsconfig_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/tlsconfig"
)

const (
	dbID  = "spiffe://example.org/ns/prod/db"
	webID = "spiffe://example.org/ns/prod/web"
)

// serveCert runs a plain crypto/tls server on 127.0.0.1 that presents
// exactly the given chain (no verification of its own, so that only the
// client decides) and writes "ok" after the handshake.
func serveCert(t *testing.T, cert tls.Certificate) string {
	return serveTLS(t, &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert})
}

// serveTLS runs a server with cfg on 127.0.0.1 that writes "ok" after each
// handshake that succeeds.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	return testnet.ServeTLS(t, cfg, func(c *tls.Conn) { c.Write([]byte("ok")) })
}

// dialWith connects with cfg and reads the server's "ok".
func dialWith(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil {
		return c.ConnectionState(), err
	}
	return c.ConnectionState(), nil
}

func clientSource(client *identity.Identity) staticSVID {
	return staticSVID{&x509svid.SVID{ID: client.ID, Certificates: client.Chain, PrivateKey: client.Key}}
}

// TestClientConfigAuthenticatesBySPIFFEID: a server whose certificate has
// the right chain and ID but no DNS or IP name at all is accepted; a name
// is checked only when one is asked for, and then in addition.
func TestClientConfigAuthenticatesBySPIFFEID(t *testing.T) {
	ca := testca.New(t)
	client := ca.Leaf(t, webID)
	bundle := &swapBundle{}
	bundle.set(ca.Root)
	noNames := ca.Leaf(t, dbID)
	if len(noNames.Leaf().DNSNames)+len(noNames.Leaf().IPAddresses) != 0 {
		t.Fatal("test setup: the server certificate carries names")
	}
	addr := serveCert(t, noNames.TLSCertificate())
	authz := tlsconfig.AuthorizeID(spiffeid.RequireFromString(dbID))

	cfg, err := tlsconfig.ClientConfig(clientSource(client), bundle, authz, "")
	if err != nil {
		t.Fatal(err)
	}
	cs, err := dialWith(addr, cfg)
	if err != nil {
		t.Fatalf("server with the right chain and ID but no names refused: %v", err)
	}
	if id, _ := tlsconfig.PeerID(cs); id.String() != dbID {
		t.Errorf("peer = %s, want %s", id, dbID)
	}

	t.Run("server name asked for and absent is refused", func(t *testing.T) {
		cfg, err := tlsconfig.ClientConfig(clientSource(client), bundle, authz, "db.example.org")
		if err != nil {
			t.Fatal(err)
		}
		_, err = dialWith(addr, cfg)
		var pe *tlsconfig.PeerError
		var he x509.HostnameError
		if !errors.As(err, &pe) || pe.Reason != tlsconfig.ReasonNameMismatch || !errors.As(err, &he) {
			t.Fatalf("dial = %v; want a name mismatch", err)
		}
	})
	t.Run("server name asked for and present is accepted", func(t *testing.T) {
		named := serveCert(t, ca.Leaf(t, dbID, testca.DNS("db.example.org")).TLSCertificate())
		cfg, err := tlsconfig.ClientConfig(clientSource(client), bundle, authz, "db.example.org")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dialWith(named, cfg); err != nil {
			t.Fatalf("dial: %v", err)
		}
	})
	t.Run("federated server: its own trust domain's bundle, named by the authorizer", func(t *testing.T) {
		fed := testca.New(t, testca.WithTrustDomain("spire.example"))
		fedID := "spiffe://spire.example/ns/prod/db"
		addr := serveCert(t, fed.Leaf(t, fedID).TLSCertificate())
		set := x509bundle.NewSet(
			x509bundle.FromX509Authorities(ca.TrustDomain, []*x509.Certificate{ca.Root}),
			x509bundle.FromX509Authorities(fed.TrustDomain, []*x509.Certificate{fed.Root}))
		want := tlsconfig.AuthorizeID(spiffeid.RequireFromString(fedID))
		cfg, err := tlsconfig.ClientConfig(clientSource(client), set, want, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dialWith(addr, cfg); err != nil {
			t.Fatalf("federated server: %v", err)
		}
		pinned, err := tlsconfig.ClientConfig(clientSource(client), set, want, "", tlsconfig.WithTrustDomain(ca.TrustDomain))
		if err != nil {
			t.Fatal(err)
		}
		_, err = dialWith(addr, pinned)
		var pe *tlsconfig.PeerError
		if !errors.As(err, &pe) || pe.Reason != tlsconfig.ReasonUnknownAuthority {
			t.Fatalf("federated server with WithTrustDomain(example.org) = %v; want refused", err)
		}
	})
	t.Run("bundle rotation followed without a new configuration", func(t *testing.T) {
		other := testca.New(t)
		bundle.set(other.Root)
		defer bundle.set(ca.Root)
		if _, err := dialWith(addr, cfg); err == nil {
			t.Fatal("a server was accepted after its root left the bundle")
		}
	})
}

// TestClientConfigRefuses attacks the client's verification, which
// replaces crypto/tls's own (InsecureSkipVerify): every defect a server's
// certificate can have must still be refused, on real connections.
func TestClientConfigRefuses(t *testing.T) {
	ca := testca.New(t)
	evil := testca.New(t) // same trust domain name, another root
	client := ca.Leaf(t, webID)
	otherTD := testca.New(t, testca.WithTrustDomain("other.org"))
	bundle := x509bundle.NewSet(x509bundle.FromX509Authorities(ca.TrustDomain, []*x509.Certificate{ca.Root}))
	authz := tlsconfig.AuthorizeID(spiffeid.RequireFromString(dbID))
	cfg, err := tlsconfig.ClientConfig(clientSource(client), bundle, authz, "")
	if err != nil {
		t.Fatal(err)
	}
	selfSigned := evil.Leaf(t, dbID)
	selfSigned.Chain = selfSigned.Chain[:1] // leaf only, from an unknown CA
	for _, tt := range []struct {
		name   string
		server *identity.Identity
		want   tlsconfig.Reason
	}{
		{"another root, same trust domain name", evil.Leaf(t, dbID), tlsconfig.ReasonUnknownAuthority},
		{"leaf of an unknown CA without its intermediate", selfSigned, tlsconfig.ReasonUnknownAuthority},
		{"right chain, another ID", ca.Leaf(t, "spiffe://example.org/ns/prod/cache"), tlsconfig.ReasonNotAuthorized},
		{"expired", ca.Leaf(t, dbID, testca.Expired()), tlsconfig.ReasonExpired},
		{"not yet valid", ca.Leaf(t, dbID, testca.NotYetValid()), tlsconfig.ReasonNotYetValid},
		{"clientAuth only", ca.Leaf(t, dbID, testca.Edit(func(x *x509.Certificate) { x.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} })), tlsconfig.ReasonWrongUsage},
		{"no SPIFFE ID", ca.Leaf(t, dbID, testca.Edit(func(x *x509.Certificate) { x.URIs = nil; x.DNSNames = []string{"db.example.org"} })), tlsconfig.ReasonNoSPIFFEID},
		{"another trust domain, no bundle for it", otherTD.Leaf(t, "spiffe://other.org/ns/prod/db"), tlsconfig.ReasonUnknownAuthority},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr := serveCert(t, tt.server.TLSCertificate())
			_, err := dialWith(addr, cfg)
			var pe *tlsconfig.PeerError
			if !errors.As(err, &pe) || pe.Reason != tt.want {
				t.Fatalf("dial = %v; want refused: %s", err, tt.want)
			}
		})
	}
	t.Run("no certificate", func(t *testing.T) {
		// A TLS server always sends a certificate message; an empty one
		// reaches VerifyConnection as no peer certificates.
		err := cfg.VerifyConnection(tls.ConnectionState{})
		var pe *tlsconfig.PeerError
		if !errors.As(err, &pe) || pe.Reason != tlsconfig.ReasonNoCertificate {
			t.Fatalf("VerifyConnection(no certificate) = %v; want refused", err)
		}
	})
}

// TestClientConfigResumedSessionVerifiedAgain: a resumed session skips the
// certificate exchange; the client still runs the revocation check and
// authorization on it, so a server revoked since the first handshake is
// refused on resumption.
func TestClientConfigResumedSessionVerifiedAgain(t *testing.T) {
	ca := testca.New(t)
	client := ca.Leaf(t, webID)
	bundle := &swapBundle{}
	bundle.set(ca.Root)
	addr := serveCert(t, ca.Leaf(t, dbID).TLSCertificate())
	var revoked atomic.Bool
	var checks atomic.Int32
	errRevoked := errors.New("revoked")
	check := func(spiffeid.ID, []*x509.Certificate) error {
		checks.Add(1)
		if revoked.Load() {
			return errRevoked
		}
		return nil
	}
	cfg, err := tlsconfig.ClientConfig(clientSource(client), bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromString(dbID)), "", tlsconfig.WithPeerCheck(check))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	resumed := false
	for i := 0; i < 5 && !resumed; i++ {
		cs, err := dialWith(addr, cfg)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		resumed = cs.DidResume
	}
	if !resumed {
		t.Fatal("test setup: no session was resumed")
	}
	revoked.Store(true)
	before := checks.Load()
	_, err = dialWith(addr, cfg)
	if !errors.Is(err, errRevoked) {
		t.Fatalf("resumed session with a revoked server = %v; want refused by the revocation check", err)
	}
	if checks.Load() == before {
		t.Fatal("the revocation check did not run")
	}
}
