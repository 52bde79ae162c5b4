package testnet_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testnet"
)

// TestEchoRoundTrip: the echo service sends back what it got.
func TestEchoRoundTrip(t *testing.T) {
	addr := testnet.Echo(t)
	got, err := testnet.RoundTrip(addr, nil, "hello")
	if err != nil || got != "hello" {
		t.Fatalf("RoundTrip = %q, %v; want hello", got, err)
	}
}

// TestServeClosesOpenConnectionsAtCleanup: a connection still open when the
// test ends is closed by the server, so its handler returns and the
// cleanup does not hang.
func TestServeClosesOpenConnectionsAtCleanup(t *testing.T) {
	var c net.Conn
	t.Run("server", func(t *testing.T) {
		addr := testnet.Echo(t)
		var err error
		if c, err = net.Dial("tcp", addr); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	})
	defer c.Close()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read after the server's test ended: %v, want EOF", err)
	}
}

// TestServeTLS: a client that trusts the server's root completes the
// handshake and gets the handler's answer; one that does not is refused.
func TestServeTLS(t *testing.T) {
	ca := testca.New(t)
	id := ca.Leaf(t, "spiffe://example.org/ns/prod/api", testca.IP("127.0.0.1"))
	addr := testnet.ServeTLS(t, &tls.Config{Certificates: []tls.Certificate{id.TLSCertificate()}}, func(c *tls.Conn) { io.Copy(c, c) })
	pool := x509.NewCertPool()
	pool.AddCert(ca.Root)
	if got, err := testnet.RoundTrip(addr, &tls.Config{RootCAs: pool}, "hi"); err != nil || got != "hi" {
		t.Fatalf("RoundTrip = %q, %v; want hi", got, err)
	}
	var unknown x509.UnknownAuthorityError
	_, err := testnet.RoundTrip(addr, &tls.Config{RootCAs: x509.NewCertPool()}, "hi")
	if !errors.As(err, &unknown) {
		t.Fatalf("RoundTrip trusting nothing: %v, want an unknown authority", err)
	}
}
