// Package diagnose explains in plain words why a TLS connection fails: it
// connects as a client would, step by step (the local files, DNS, TCP, TLS,
// the server's chain and its revocation, the server's request for a client
// certificate, the client certificate, the server's verdict and how it
// enforces mutual TLS), and ends with one verdict, its evidence and a fix.
// When the evidence cannot separate two causes, the verdict is Undecided and
// the fix names the one test that would tell them apart.
//
// The handshake probe runs with verification disabled so that it can see
// what would have failed; it is labelled as such in the report and never
// decides the verdict: every verdict comes from an independent check with
// crypto/x509 against the trusted roots.
package diagnose

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"time"

	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/inspect"
)

// Class names a verdict. Each failure has one.
type Class string

// Verdict classes. The README lists them with an example each.
const (
	OK        Class = "ok"
	Undecided Class = "undecided" // two causes fit the evidence; the fix names the test that separates them

	// Local files.
	FileUnreadable Class = "file_unreadable"
	NotPEM         Class = "file_not_pem"
	PKCS12NotPEM   Class = "pkcs12_not_pem"
	KeyEncrypted   Class = "key_encrypted"
	KeyMismatch    Class = "key_mismatch"

	// Network and protocol.
	DNSFailure        Class = "dns_failure"
	ConnectionRefused Class = "connection_refused"
	ConnectionTimeout Class = "connection_timeout"
	NotTLS            Class = "not_tls"
	ProtocolMismatch  Class = "protocol_mismatch"
	ALPNMismatch      Class = "alpn_mismatch"

	// The server's certificate.
	ServerUnknownCA     Class = "server_unknown_ca"
	BundleMissingRoot   Class = "bundle_missing_root"
	RootRotated         Class = "root_rotated"
	ForeignTrustDomain  Class = "foreign_trust_domain"
	MissingIntermediate Class = "missing_intermediate"
	ChainMisordered     Class = "chain_misordered"
	NameConstraints     Class = "name_constraints_violated"
	IntermediateExpired Class = "intermediate_expired"
	ServerExpired       Class = "server_cert_expired"
	ServerNotYetValid   Class = "server_cert_not_yet_valid"
	ClockSkew           Class = "clock_skew"
	NameMismatch        Class = "name_mismatch"
	SNICertificate      Class = "sni_certificate"
	SPIFFEIDMismatch    Class = "spiffe_id_mismatch"
	ServerWrongUsage    Class = "server_wrong_key_usage"
	ServerCertRevoked   Class = "server_cert_revoked"

	// Revocation sources.
	RevocationUnavailable Class = "revocation_unavailable"

	// Mutual TLS and the client certificate.
	ClientCertNotRequested    Class = "client_cert_not_requested"
	ClientCertOptional        Class = "client_cert_optional"
	PermissiveMode            Class = "permissive_mode"
	ClientCertRequired        Class = "client_cert_required"
	ClientCANotAccepted       Class = "client_ca_not_accepted"
	ClientMissingIntermediate Class = "client_missing_intermediate"
	ClientCertRefused         Class = "client_cert_refused"
	ClientCertExpired         Class = "client_cert_expired"
	ClientCertRevoked         Class = "client_cert_revoked"
	ClientWrongUsage          Class = "client_wrong_key_usage"
	ClientCertDropped         Class = "client_cert_dropped"

	// Authorization after the handshake.
	IdentityRefused  Class = "identity_refused"
	HTTPUnauthorized Class = "http_unauthorized"
)

// Options describe the connection to diagnose.
type Options struct {
	// Addr is host:port.
	Addr string
	// ServerName is the DNS or IP name the server's certificate must carry,
	// and the SNI sent. Empty means Addr's host, checked only when Expect is
	// nil: with Expect set, the server is judged as mutual's clients (proxy
	// outbound, tlsconfig) and other SPIFFE clients judge it, by chain and
	// SPIFFE ID, and a certificate without the name is fine (the report
	// says so).
	ServerName string
	// Roots are the trusted roots; nil means the system's (or the identity
	// directory's bundle, when Files name one).
	Roots []*x509.Certificate
	// ClientChain and ClientKey are the client identity, if any. The key may
	// not match the certificate: that is one of the things diagnosed.
	ClientChain []*x509.Certificate
	ClientKey   any
	// Files, when set, name the client identity on disk; Run reads them as
	// its first step and diagnoses what is wrong with them (encrypted key,
	// PKCS#12, garbage). ClientChain, ClientKey and Roots left nil are
	// filled from them.
	Files Files
	// Expect, when set, is the SPIFFE ID pattern the server must match.
	Expect *authz.Pattern
	// ALPN is what the client offers; nil means h2 and http/1.1.
	ALPN []string
	// Method and Path are the HTTP request sent to an HTTP server; empty
	// means GET /.
	Method, Path string
	// Timeout bounds each network step; default 5s.
	Timeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// SkipRevocation skips the CRL and OCSP checks of both certificates;
	// the zero value checks them.
	SkipRevocation bool

	// nameOptional: ServerName was not asked for and Expect is set, so a
	// missing name is reported but is no failure.
	nameOptional bool
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
	// Verdict is the cause; Explanation says it in words, with the
	// evidence; Fix says what to do.
	Verdict     Class  `json:"verdict"`
	Explanation string `json:"explanation"`
	Fix         string `json:"fix"`
	// Candidates are the causes an Undecided verdict could not separate.
	Candidates []Class `json:"candidates,omitempty"`
	// ServerChain describes what the server presented.
	ServerChain []inspect.Certificate `json:"server_chain,omitempty"`
	// AcceptableCAs are the CA names the server listed in its certificate request.
	AcceptableCAs []string `json:"acceptable_cas,omitempty"`
	TLSVersion    string   `json:"tls_version,omitempty"`
	CipherSuite   string   `json:"cipher_suite,omitempty"`
	ALPN          string   `json:"alpn,omitempty"`
}

func (r *Report) step(name string, ok bool, format string, a ...any) {
	r.Steps = append(r.Steps, Step{Name: name, OK: ok, Detail: fmt.Sprintf(format, a...)})
}

func (r *Report) verdict(c Class, explanation, fix string) *Report {
	r.Verdict, r.Explanation, r.Fix = c, explanation, fix
	return r
}

// undecided ends with the causes the evidence cannot separate and the one
// test that would.
func (r *Report) undecided(explanation, test string, candidates ...Class) *Report {
	r.Candidates = candidates
	return r.verdict(Undecided, explanation, test)
}

// diagnosis is one run: the options, the report so far and what the
// probes saw. Each step of Run is a method that returns a report when it
// reached the verdict, nil to go on.
type diagnosis struct {
	o      Options
	r      *Report
	host   string
	port   string
	p      *probe              // the main probe
	chain  []*x509.Certificate // what the server presented
	server *certStatus         // the server certificate's revocation
	// clientRevocationDown lists the client's revocation sources that
	// could not answer; clientRevocationGood: one said good.
	clientRevocationDown []string
	clientRevocationGood bool
}

// Run diagnoses the connection described by o.
func Run(ctx context.Context, o Options) *Report {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	d := &diagnosis{o: o, r: &Report{Target: o.Addr}}
	for _, step := range []func(context.Context) *Report{
		d.readFiles,
		d.resolve,
		d.handshake,
		d.serverChain,
		d.serverRevocation,
		d.certificateRequest,
		d.clientCertificate,
		d.serverVerdict,
		d.enforcement,
	} {
		if r := step(ctx); r != nil {
			return r
		}
	}
	return d.r.verdict(OK, "the connection works: the server's certificate verifies and the server accepted the client", "nothing to fix")
}

// resolve checks the address and resolves the host.
func (d *diagnosis) resolve(ctx context.Context) *Report {
	r, o := d.r, &d.o
	host, port, err := net.SplitHostPort(o.Addr)
	if err != nil {
		r.step("address", false, "%v", err)
		return r.verdict(DNSFailure, fmt.Sprintf("%q is not HOST:PORT", o.Addr), "give the server as HOST:PORT, e.g. api.internal:8443")
	}
	d.host, d.port = host, port
	if o.ServerName == "" {
		o.ServerName = host
		o.nameOptional = o.Expect != nil
	}
	if net.ParseIP(host) != nil {
		return nil
	}
	dctx, cancel := context.WithTimeout(ctx, o.Timeout)
	addrs, err := net.DefaultResolver.LookupHost(dctx, host)
	cancel()
	if err != nil {
		r.step("dns", false, "%s does not resolve: %v", host, err)
		return r.verdict(DNSFailure, fmt.Sprintf("the name %s does not resolve", host), "check the name, or the DNS (or /etc/hosts) of this machine")
	}
	r.step("dns", true, "%s resolves to %s", host, joinComma(addrs))
	return nil
}
