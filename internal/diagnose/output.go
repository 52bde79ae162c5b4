package diagnose

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/tlsconfig"
)

// WriteText prints the report for people.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "diagnose %s\n\n", r.Target)
	for _, s := range r.Steps {
		mark := "ok  "
		if !s.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "  [%s] %-20s %s\n", mark, s.Name, s.Detail)
	}
	if len(r.ServerChain) > 0 {
		fmt.Fprintf(w, "\n  server chain:\n")
		for i, c := range r.ServerChain {
			name := c.SPIFFEID
			if name == "" {
				name = c.Subject
			}
			fmt.Fprintf(w, "    [%d] %s %s (issuer %s; %s)\n", i, c.Role, name, c.Issuer, c.Validity)
		}
	}
	fmt.Fprintf(w, "\nverdict: %s\n  %s\nfix:\n  %s\n", r.Verdict, r.Explanation, r.Fix)
}

// OCSPRevoked asks the OCSP responder named in leaf whether it is revoked.
// roots verify an https responder; nil means the system's.
func OCSPRevoked(roots []*x509.Certificate) func(ctx context.Context, leaf, issuer *x509.Certificate) (bool, error) {
	return func(ctx context.Context, leaf, issuer *x509.Certificate) (bool, error) {
		if len(leaf.OCSPServer) == 0 {
			return false, errors.New("the certificate names no OCSP responder")
		}
		req, err := ocsp.CreateRequest(leaf, issuer, nil)
		if err != nil {
			return false, err
		}
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if roots != nil {
			cfg.RootCAs = pki.CertPool(roots)
		}
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		hr, _ := http.NewRequestWithContext(ctx, http.MethodPost, leaf.OCSPServer[0], bytes.NewReader(req))
		hr.Header.Set("Content-Type", "application/ocsp-request")
		resp, err := hc.Do(hr)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		der, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if err != nil {
			return false, err
		}
		r, err := ocsp.ParseResponseForCert(der, leaf, issuer)
		if err != nil {
			return false, err
		}
		return r.Status == ocsp.Revoked, nil
	}
}

// ExplainClient says, in words, what a server that trusts roots would think
// of a client's certificate chain (leaf first).
func ExplainClient(chain []*x509.Certificate, roots []*x509.Certificate, now time.Time) (ok bool, words string) {
	if len(chain) == 0 {
		return false, "you presented no client certificate: pass one (curl --cert/--key, openssl s_client -cert/-key, mutual diagnose --identity-dir)"
	}
	src := staticBundle{pool: roots}
	_, _, err := tlsconfig.VerifyPeer(chain, src, x509.ExtKeyUsageClientAuth, now)
	if err == nil {
		return true, fmt.Sprintf("your certificate %s verifies: valid until %s, issued by %q, clientAuth", describeLeaf(chain[0]), chain[0].NotAfter.UTC().Format(time.RFC3339), chain[0].Issuer.String())
	}
	var pe *tlsconfig.PeerError
	if errors.As(err, &pe) {
		switch pe.Reason {
		case tlsconfig.ReasonUnknownAuthority:
			if len(chain) == 1 && !isSelfSigned(chain[0]) {
				return false, fmt.Sprintf("your certificate %s was sent without its intermediate (issuer %q) or comes from a CA this server does not trust: send the full chain (cert.pem holds leaf then intermediate; openssl s_client needs -cert_chain)", describeLeaf(chain[0]), chain[0].Issuer.String())
			}
			return false, fmt.Sprintf("your certificate %s is issued by a CA this server does not trust (%q)", describeLeaf(chain[0]), chain[len(chain)-1].Issuer.String())
		case tlsconfig.ReasonNoSPIFFEID:
			return false, "your certificate carries no SPIFFE ID (a URI SAN spiffe://...): it is not a mutual identity"
		case tlsconfig.ReasonWrongUsage:
			return false, "your certificate lacks the clientAuth extended key usage: it cannot authenticate a client"
		}
		return false, pe.Error()
	}
	return false, err.Error()
}

// staticBundle serves the same roots for any trust domain: the --listen
// server explains certificates of whatever domain it is pointed at.
type staticBundle struct{ pool []*x509.Certificate }

func (s staticBundle) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return x509bundle.FromX509Authorities(td, s.pool), nil
}

// Listen runs a one-off server on ln that tells each client what is wrong
// with its certificate (over the connection, as text or an HTTP answer,
// and on out). cert is the server's own certificate.
func Listen(ctx context.Context, ln net.Listener, cert tls.Certificate, roots []*x509.Certificate, out io.Writer) error {
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		// Ask for any certificate without judging it in the handshake: the
		// judgement is what this server explains.
		ClientAuth: tls.RequestClientCert,
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(15 * time.Second))
			tc := tls.Server(c, cfg)
			if err := tc.Handshake(); err != nil {
				fmt.Fprintf(out, "%s: handshake failed before any certificate was seen: %v\n", c.RemoteAddr(), err)
				return
			}
			ok, words := ExplainClient(tc.ConnectionState().PeerCertificates, roots, time.Now())
			verdict := "REFUSED"
			if ok {
				verdict = "OK"
			}
			fmt.Fprintf(out, "%s: %s: %s\n", c.RemoteAddr(), verdict, words)
			// Answer an HTTP client in HTTP, anything else in plain text.
			br := bufio.NewReader(tc)
			tc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			if req, err := http.ReadRequest(br); err == nil {
				req.Body.Close()
				code := http.StatusOK
				if !ok {
					code = http.StatusForbidden
				}
				body := "mutual diagnose: " + verdict + ": " + words + "\n"
				fmt.Fprintf(tc, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", code, http.StatusText(code), len(body), body)
				return
			}
			tc.SetWriteDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(tc, "mutual diagnose: %s: %s\n", verdict, strings.TrimSpace(words))
		}()
	}
}
