package diagnose

import (
	"bufio"
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

	"github.com/mutual-tls/mutual/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
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
	fmt.Fprintf(w, "\nverdict: %s\n  %s\n", r.Verdict, r.Explanation)
	if len(r.Candidates) > 0 {
		fmt.Fprintf(w, "candidates: %s\ntest that tells them apart:\n  %s\n", joinClasses(r.Candidates), r.Fix)
		return
	}
	fmt.Fprintf(w, "fix:\n  %s\n", r.Fix)
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

// ListenAddr reads the server identity in f, listens on addr and runs
// Listen: `mutual diagnose --listen`.
func ListenAddr(ctx context.Context, addr string, f Files, out io.Writer) error {
	id, err := LoadFiles(f)
	if err != nil {
		return err
	}
	if len(id.Chain) == 0 || id.Key == nil {
		return errors.New("--listen needs a server identity (--identity-dir, or --cert and --key)")
	}
	if len(id.Roots) == 0 {
		return errors.New("--listen needs the roots client certificates should chain to (--bundle, or bundle.pem in --identity-dir)")
	}
	cert := tls.Certificate{PrivateKey: id.Key, Leaf: id.Chain[0]}
	for _, c := range id.Chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", addr, err)
	}
	fmt.Fprintf(out, "mutual diagnose: listening on %s; connect a client to see what is wrong with its certificate (Ctrl-C stops)\n", ln.Addr())
	return Listen(ctx, ln, cert, id.Roots, out)
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

func joinClasses(cs []Class) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = string(c)
	}
	return strings.Join(s, ", ")
}
