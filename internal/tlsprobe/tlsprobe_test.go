package tlsprobe_test

import (
	"context"
	"crypto/tls"
	"net"
	"testing"

	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/tlsprobe"
)

// TestChain: the chain of a server nobody trusts is read whole, and the
// server sees a handshake that the client aborted (nothing sent); a server
// that does not speak TLS is an error, not an empty chain.
func TestChain(t *testing.T) {
	ca := testca.New(t)
	srv := ca.Leaf(t, "spiffe://example.org/mutual/server", testca.IP("127.0.0.1"))
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{srv.TLSCertificate()}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	handshakes := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		handshakes <- c.(*tls.Conn).Handshake()
	}()
	chain, err := tlsprobe.Chain(context.Background(), nil, ln.Addr().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != len(srv.Chain) || !chain[0].Equal(srv.Leaf()) {
		t.Fatalf("got %d certificates, want the server's chain of %d, leaf first", len(chain), len(srv.Chain))
	}
	if err := <-handshakes; err == nil {
		t.Error("the server saw a completed handshake: the probe trusted its chain")
	}

	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	go func() {
		c, err := plain.Accept()
		if err == nil {
			c.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\n"))
			c.Close()
		}
	}()
	if chain, err := tlsprobe.Chain(context.Background(), nil, plain.Addr().String(), nil); err == nil {
		t.Fatalf("a plaintext server: %d certificates and no error", len(chain))
	}
}
