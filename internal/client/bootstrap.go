package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/tlsprobe"
)

// FetchRoot obtains the CA's root certificate from the server at caURL and
// accepts it only if its SHA-256 fingerprint is the one given: trust comes
// from the fingerprint (carried by a join token), never from first use.
//
// It needs no verification bypass: a handshake with an empty root pool fails
// verification, and the certificates the server presented come back in the
// error; the CA service adds its root to its chain for a client offering
// api.BootstrapALPN. The root is then
// checked: its fingerprint, that it is a self-signed CA, that the server's
// chain verifies to it for caURL's host name, and that the server presents
// the CA service's own identity (spiffe://TD/mutual/server), not merely a
// certificate for the host name.
func FetchRoot(ctx context.Context, caURL string, fingerprint [32]byte) (*x509.Certificate, error) {
	root, _, err := fetchRoot(ctx, caURL, fingerprint)
	return root, err
}

// fetchRoot is FetchRoot, also returning the CA server's identity.
func fetchRoot(ctx context.Context, caURL string, fingerprint [32]byte) (*x509.Certificate, spiffeid.ID, error) {
	u, err := url.Parse(caURL)
	if err != nil || u.Host == "" {
		return nil, spiffeid.ID{}, fmt.Errorf("CA address %q is not a URL", caURL)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "443")
	}
	presented, err := tlsprobe.Chain(ctx, nil, host, &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12,
		NextProtos: []string{api.BootstrapALPN, "http/1.1"}})
	if err != nil {
		return nil, spiffeid.ID{}, fmt.Errorf("%s: %w", caURL, err)
	}
	var root *x509.Certificate
	for _, c := range presented {
		if pki.Fingerprint(c) == fingerprint {
			root = c
		}
	}
	if root == nil {
		return nil, spiffeid.ID{}, fmt.Errorf("%s did not present a root certificate with fingerprint %s: the token belongs to another CA, or something is intercepting the connection",
			caURL, hex.EncodeToString(fingerprint[:]))
	}
	if !root.IsCA || root.CheckSignatureFrom(root) != nil {
		return nil, spiffeid.ID{}, fmt.Errorf("%s: the certificate with the token's fingerprint is not a self-signed CA", caURL)
	}
	err = presented[0].VerifyHostname(u.Hostname())
	if err == nil {
		_, err = pki.VerifyChain(presented, []*x509.Certificate{root}, time.Time{})
	}
	if err != nil {
		return nil, spiffeid.ID{}, fmt.Errorf("%s: the server's certificate does not verify against the pinned root: %w", caURL, err)
	}
	id, err := x509svid.IDFromCert(presented[0])
	if err != nil || pki.KindOf(id) != pki.KindServer {
		return nil, spiffeid.ID{}, fmt.Errorf("%s: %w", caURL, &NotCAError{Got: id})
	}
	return root, id, nil
}
