// Package tlsprobe reads what a TLS server presents without trusting it and
// without skipping verification: the handshake is made with no trusted
// roots, and the server's chain is read from the verification error it
// ends with. Nothing is sent to the server after the handshake.
package tlsprobe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"time"
)

// Chain dials addr (HOST:PORT) and returns the certificates the server
// presents, leaf first. cfg, when not nil, sets the versions, cipher suites
// and server name offered (nil: TLS 1.2 and up, addr's host); its RootCAs
// is replaced by an empty pool. d, when nil, is a dialer with a 5 second
// timeout. An error means the server did not get as far as presenting a
// certificate (unreachable, not TLS, no version or suite in common): it is
// the handshake's, for the caller to explain.
func Chain(ctx context.Context, d *net.Dialer, addr string, cfg *tls.Config) ([]*x509.Certificate, error) {
	if d == nil {
		d = &net.Dialer{Timeout: 5 * time.Second}
	}
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	} else {
		cfg = cfg.Clone()
	}
	if cfg.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.ServerName = host
		}
	}
	// Trust nothing and skip nothing: the handshake ends in a
	// verification error that carries the chain.
	cfg.RootCAs = x509.NewCertPool()
	cfg.InsecureSkipVerify = false
	td := tls.Dialer{NetDialer: d, Config: cfg}
	c, err := td.DialContext(ctx, "tcp", addr)
	if err == nil {
		// A VerifyConnection of the caller's accepted what the empty
		// pool refused? It cannot: crypto/tls verifies first.
		defer c.Close()
		return c.(*tls.Conn).ConnectionState().PeerCertificates, nil
	}
	var ve *tls.CertificateVerificationError
	if errors.As(err, &ve) {
		return ve.UnverifiedCertificates, nil
	}
	return nil, err
}
