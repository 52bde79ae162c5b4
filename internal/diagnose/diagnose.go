// Package diagnose explains in plain words why a TLS connection fails: it
// connects as a client would, step by step (DNS, TCP, TLS, the server's
// chain, the server's request for a client certificate, the client
// certificate, the server's verdict), and ends with a verdict and a fix.
//
// The handshake probe runs with verification disabled so that it can see
// what would have failed; it is labelled as such in the report and never
// decides the verdict: every verdict comes from an independent check with
// crypto/x509 against the trusted roots.
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
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/net/http2"

	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/inspect"
)

// Class names a verdict. Each failure has one.
type Class string

// Verdict classes.
const (
	OK                  Class = "ok"
	DNSFailure          Class = "dns_failure"
	ConnectionRefused   Class = "connection_refused"
	ConnectionTimeout   Class = "connection_timeout"
	NotTLS              Class = "not_tls"
	ProtocolMismatch    Class = "protocol_mismatch"
	ServerUnknownCA     Class = "server_unknown_ca"
	MissingIntermediate Class = "missing_intermediate"
	ServerExpired       Class = "server_cert_expired"
	ServerNotYetValid   Class = "server_cert_not_yet_valid"
	NameMismatch        Class = "name_mismatch"
	SPIFFEIDMismatch    Class = "spiffe_id_mismatch"
	ServerWrongUsage    Class = "server_wrong_key_usage"
	ClientCertRequired  Class = "client_cert_required"
	ClientCANotAccepted Class = "client_ca_not_accepted"
	ClientCertRefused   Class = "client_cert_refused"
	ClientCertExpired   Class = "client_cert_expired"
	ClientCertRevoked   Class = "client_cert_revoked"
	ClientWrongUsage    Class = "client_wrong_key_usage"
	KeyMismatch         Class = "key_mismatch"
	IdentityRefused     Class = "identity_refused"
)

// Options describe the connection to diagnose.
type Options struct {
	// Addr is host:port.
	Addr string
	// ServerName is the DNS or IP name the server's certificate must carry.
	// Empty means Addr's host, checked only when Expect is nil: with Expect
	// set, the server is judged as mutual's clients (proxy outbound,
	// tlsconfig) and other SPIFFE clients judge it, by chain and SPIFFE ID,
	// and a certificate without the name is fine (the report says so).
	ServerName string
	// Roots are the trusted roots; nil means the system's.
	Roots []*x509.Certificate
	// ClientChain and ClientKey are the client identity, if any. The key may
	// not match the certificate: that is one of the things diagnosed.
	ClientChain []*x509.Certificate
	ClientKey   any
	// Expect, when set, is the SPIFFE ID pattern the server must match.
	Expect *authz.Pattern
	// nameOptional: ServerName was not asked for and Expect is set, so a
	// missing name is reported but is no failure.
	nameOptional bool
	// Timeout bounds each network step; default 5s.
	Timeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Revoked, if set, tells whether the client certificate is revoked
	// (an OCSP or CRL check); nil skips the check.
	Revoked func(ctx context.Context, leaf, issuer *x509.Certificate) (bool, error)
}

// Step is one stage of the connection, in words.
type Step struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Report is the outcome.
type Report struct {
	Target string `json:"target"`
	Steps  []Step `json:"steps"`
	// Verdict is the cause; Explanation says it in words; Fix says what to do.
	Verdict     Class  `json:"verdict"`
	Explanation string `json:"explanation"`
	Fix         string `json:"fix"`
	// ServerChain describes what the server presented.
	ServerChain []inspect.Certificate `json:"server_chain,omitempty"`
	// AcceptableCAs are the CA names the server listed in its certificate request.
	AcceptableCAs []string `json:"acceptable_cas,omitempty"`
	TLSVersion    string   `json:"tls_version,omitempty"`
	CipherSuite   string   `json:"cipher_suite,omitempty"`
}

func (r *Report) step(name string, ok bool, format string, a ...any) {
	r.Steps = append(r.Steps, Step{Name: name, OK: ok, Detail: fmt.Sprintf(format, a...)})
}

func (r *Report) verdict(c Class, explanation, fix string) *Report {
	r.Verdict, r.Explanation, r.Fix = c, explanation, fix
	return r
}

// probe is what the labelled, unverified handshake saw.
type probe struct {
	err           error
	state         tls.ConnectionState
	requested     bool
	acceptable    [][]byte
	sentCert      bool
	postAlert     error  // an alert read right after the handshake (TLS 1.3 client-cert verdict)
	httpStatus    int    // when the server speaks HTTP
	httpBody      string // first bytes of the answer
	versionTried  uint16
	closedEarly   bool
	unsupportedVs bool
}

// Run diagnoses the connection described by o.
func Run(ctx context.Context, o Options) *Report {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	r := &Report{Target: o.Addr}
	host, port, err := net.SplitHostPort(o.Addr)
	if err != nil {
		r.step("address", false, "%v", err)
		return r.verdict(DNSFailure, fmt.Sprintf("%q is not HOST:PORT", o.Addr), "give the server as HOST:PORT, e.g. api.internal:8443")
	}
	if o.ServerName == "" {
		o.ServerName = host
		o.nameOptional = o.Expect != nil
	}

	// 1. DNS.
	if net.ParseIP(host) == nil {
		dctx, cancel := context.WithTimeout(ctx, o.Timeout)
		addrs, err := net.DefaultResolver.LookupHost(dctx, host)
		cancel()
		if err != nil {
			r.step("dns", false, "%s does not resolve: %v", host, err)
			return r.verdict(DNSFailure, fmt.Sprintf("the name %s does not resolve", host), "check the name, or the DNS (or /etc/hosts) of this machine")
		}
		r.step("dns", true, "%s resolves to %s", host, strings.Join(addrs, ", "))
	}

	// 2. TCP.
	d := net.Dialer{Timeout: o.Timeout}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, port))
	if err != nil {
		var ne net.Error
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			r.step("tcp", false, "connection refused")
			return r.verdict(ConnectionRefused, fmt.Sprintf("nothing listens on %s (connection refused)", o.Addr),
				"start the service, or check the port; a firewall that rejects also looks like this")
		case errors.As(err, &ne) && ne.Timeout():
			r.step("tcp", false, "no answer within %s", o.Timeout)
			return r.verdict(ConnectionTimeout, fmt.Sprintf("%s did not answer within %s", o.Addr, o.Timeout),
				"a firewall drops the packets, or the host is down or unreachable: check the route and the firewall")
		}
		r.step("tcp", false, "%v", err)
		return r.verdict(ConnectionRefused, fmt.Sprintf("cannot connect to %s: %v", o.Addr, err), "check the address and the network path")
	}
	r.step("tcp", true, "connected to %s", conn.RemoteAddr())

	// 3. The labelled probe: a handshake that does not verify, to see.
	p := runProbe(ctx, conn, o, 0)
	if p.err != nil {
		if c := classifyHandshakeError(ctx, r, o, p); c != nil {
			return c
		}
	}
	r.TLSVersion = tls.VersionName(p.state.Version)
	r.CipherSuite = tls.CipherSuiteName(p.state.CipherSuite)
	if p.err == nil {
		r.step("tls", true, "handshake completed (probe without verification, for diagnosis only): %s, %s", r.TLSVersion, r.CipherSuite)
	}
	chain := p.state.PeerCertificates
	if len(chain) == 0 {
		r.step("server certificate", false, "the server sent no certificate")
		return r.verdict(NotTLS, "the server presented no certificate", "configure the server's certificate")
	}
	r.ServerChain = inspect.Describe(chain, o.Now())
	r.step("server certificate", true, "%s, issued by %q, %s", describeLeaf(chain[0]), chain[0].Issuer.String(), r.ServerChain[0].Validity)

	// 4. Our own verdict on the server's chain.
	if v := checkServer(r, o, chain); v != nil {
		return v
	}

	// 5. The client certificate.
	if p.requested {
		names := make([]string, 0, len(p.acceptable))
		for _, n := range p.acceptable {
			names = append(names, rdnString(n))
		}
		r.AcceptableCAs = names
		if len(names) > 0 {
			r.step("certificate request", true, "the server asks for a client certificate from: %s", strings.Join(names, "; "))
		} else {
			r.step("certificate request", true, "the server asks for a client certificate (no CA names listed)")
		}
	} else {
		r.step("certificate request", true, "the server does not ask for a client certificate")
	}
	if v := checkClient(ctx, r, o, p); v != nil {
		return v
	}

	// 6. The server's verdict, after the handshake.
	if p.postAlert != nil {
		return serverRefused(r, o, p.postAlert)
	}
	if p.httpStatus == http.StatusForbidden {
		r.step("server verdict", false, "HTTP 403: %s", strings.TrimSpace(p.httpBody))
		return r.verdict(IdentityRefused, "the server authenticated this client but refused its identity: "+strings.TrimSpace(p.httpBody),
			"ask the service owner to allow this identity (mutual proxy --allow or its policy file), or use an identity that is allowed")
	}
	if p.closedEarly && len(o.ClientChain) > 0 {
		r.step("server verdict", false, "the server closed the connection right after the handshake")
		return r.verdict(IdentityRefused, "the server accepted the handshake, then closed the connection at once: it refused this identity (a mutual proxy in tcp mode does so for identities its policy does not allow)",
			"ask the service owner to allow this identity (mutual proxy --allow), or use an identity that is allowed")
	}
	if p.httpStatus != 0 {
		r.step("server verdict", true, "HTTP %d", p.httpStatus)
	} else {
		r.step("server verdict", true, "the connection stays open: the server accepted this client")
	}
	return r.verdict(OK, "the connection works: the server's certificate verifies and the server accepted the client", "nothing to fix")
}

func describeLeaf(c *x509.Certificate) string {
	if id, err := x509svid.IDFromCert(c); err == nil {
		return id.String()
	}
	if len(c.DNSNames) > 0 {
		return strings.Join(c.DNSNames, ", ")
	}
	return c.Subject.String()
}

// runProbe does the unverified handshake (InsecureSkipVerify, labelled:
// diagnosis only) and records what the server did.
func runProbe(ctx context.Context, conn net.Conn, o Options, version uint16) *probe {
	p := &probe{versionTried: version}
	cfg := &tls.Config{
		ServerName: o.ServerName,
		// DIAGNOSE PROBE ONLY: verification is skipped so that the probe can
		// see a certificate that would fail; the verdict comes from the
		// independent checks in checkServer, never from this handshake.
		InsecureSkipVerify: true, //nolint:gosec // labelled diagnose probe
		NextProtos:         []string{"h2", "http/1.1"},
		MinVersion:         tls.VersionTLS12,
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			p.requested = true
			p.acceptable = cri.AcceptableCAs
			if len(o.ClientChain) == 0 || o.ClientKey == nil {
				return &tls.Certificate{}, nil
			}
			p.sentCert = true
			c := &tls.Certificate{PrivateKey: o.ClientKey, Leaf: o.ClientChain[0]}
			for _, x := range o.ClientChain {
				c.Certificate = append(c.Certificate, x.Raw)
			}
			return c, nil
		},
	}
	if version != 0 {
		cfg.MinVersion, cfg.MaxVersion = version, version
	}
	tc := tls.Client(conn, cfg)
	hctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	p.err = tc.HandshakeContext(hctx)
	if p.err != nil {
		conn.Close()
		return p
	}
	p.state = tc.ConnectionState()
	// In TLS 1.3 the server judges the client certificate after the client
	// has finished: its verdict, if negative, is the next thing to arrive.
	if p.state.NegotiatedProtocol == "http/1.1" || p.state.NegotiatedProtocol == "h2" {
		p.httpProbe(tc, o)
	} else {
		tc.SetReadDeadline(time.Now().Add(min(o.Timeout, 700*time.Millisecond)))
		var b [1]byte
		_, err := tc.Read(b[:])
		var ne net.Error
		switch {
		case err == nil:
		case errors.As(err, &ne) && ne.Timeout():
		case isAlert(err):
			p.postAlert = err
		case errors.Is(err, io.EOF):
			p.closedEarly = true
		}
	}
	tc.Close()
	return p
}

// httpProbe sends one request, so that an HTTP server (a mutual proxy in
// http mode) can state its verdict on the identity.
func (p *probe) httpProbe(tc *tls.Conn, o Options) {
	tc.SetDeadline(time.Now().Add(o.Timeout))
	if p.state.NegotiatedProtocol == "h2" {
		// Speak HTTP/2 over this very connection.
		h2, err := (&http2.Transport{}).NewClientConn(tc)
		if err != nil {
			return
		}
		defer h2.Close()
		req, _ := http.NewRequest(http.MethodGet, "https://"+o.ServerName+"/", nil)
		resp, err := h2.RoundTrip(req)
		if err != nil {
			if isAlert(err) {
				p.postAlert = err
			}
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		p.httpStatus, p.httpBody = resp.StatusCode, string(body)
		return
	}
	fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: mutual-diagnose\r\nConnection: close\r\n\r\n", o.ServerName)
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		if isAlert(err) {
			p.postAlert = err
		}
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	p.httpStatus, p.httpBody = resp.StatusCode, string(body)
}
