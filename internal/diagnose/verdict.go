package diagnose

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/mutual-tls/mutual/internal/pki"
)

// mutualForbidden starts the body of a mutual proxy's 403 (http mode):
// the rest is the policy's reason, naming the identity, method and path.
const mutualForbidden = "mutual proxy: forbidden: "

// serverVerdict reads what the server said after the handshake: an alert,
// a close, an HTTP status.
func (d *diagnosis) serverVerdict(ctx context.Context) *Report {
	r, p := d.r, d.p
	if p.closedEarly && p.state.NegotiatedProtocol == "" {
		if v := d.h2Only(ctx); v != nil {
			return v
		}
	}
	switch {
	case p.postAlert != nil:
		return d.serverRefused(ctx, p.postAlert)
	case p.closedEarly && len(d.o.ClientChain) > 0:
		return d.serverRefused(ctx, nil)
	case p.http == nil:
		r.step("server verdict", true, "the connection stays open: the server accepted this client")
		d.failsOpen()
		return nil
	}
	a := p.http
	body := strings.TrimSpace(a.body)
	switch {
	case a.refusesCertificate():
		if !p.sentCert {
			r.step("server verdict", false, "HTTP %d: the server wants a client certificate (%s)", a.status, a.nginxWords())
			return d.clientCertRequired()
		}
		return d.serverRefused(ctx, &httpRefusal{status: a.status, words: a.nginxWords()})
	case a.status == http.StatusForbidden && strings.HasPrefix(body, mutualForbidden):
		reason := strings.TrimPrefix(body, mutualForbidden)
		r.step("server verdict", false, "HTTP 403 from a mutual proxy: %s", reason)
		return r.verdict(IdentityRefused, fmt.Sprintf("the mutual proxy authenticated this client and its policy refused the request: %s (no rule allows it)", reason),
			fmt.Sprintf("add a rule for %s to the proxy's policy (mutual proxy --allow or its policy file: the SPIFFE ID pattern, and the methods and paths it may use), or use an identity that is allowed", d.method()+" "+d.path()))
	case (a.status == http.StatusForbidden || a.status == http.StatusUnauthorized) && !p.requested:
		return nil // enforcement explains: nobody asked for the certificate
	case a.status == http.StatusForbidden && p.sentCert:
		r.step("server verdict", false, "HTTP 403: %s", body)
		return r.verdict(IdentityRefused, "the server authenticated this client and refused its identity: "+body,
			"ask the service owner to allow this identity (mutual proxy --allow or its policy file), or use an identity that is allowed")
	case a.status == http.StatusUnauthorized:
		r.step("server verdict", false, "HTTP 401 after a successful handshake (WWW-Authenticate: %q)", a.auth)
		return r.verdict(HTTPUnauthorized, fmt.Sprintf("the TLS handshake succeeded; the application then wants credentials of its own (HTTP 401, WWW-Authenticate: %q)", a.auth),
			"send the credentials the application asks for (a token or password, as WWW-Authenticate says); mutual TLS is not the problem")
	}
	r.step("server verdict", true, "HTTP %d", a.status)
	d.failsOpen()
	return nil
}

// failsOpen notes a server that accepted a client whose revocation status
// cannot be known.
func (d *diagnosis) failsOpen() {
	if len(d.clientRevocationDown) > 0 && d.p.sentCert {
		d.r.step("client revocation", true, "the server accepted this client although its revocation status cannot be known (%s): the server fails open, or checks no revocation", strings.Join(d.clientRevocationDown, "; "))
	}
}

func (d *diagnosis) method() string {
	if d.o.Method == "" {
		return http.MethodGet
	}
	return d.o.Method
}

func (d *diagnosis) path() string {
	if d.o.Path == "" {
		return "/"
	}
	return d.o.Path
}

// serverRefused explains the server's refusal of our certificate (its
// alert, or a close when err is nil), using what is known locally to name
// the cause.
func (d *diagnosis) serverRefused(ctx context.Context, err error) *Report {
	r, o := d.r, d.o
	alert := "it closed the connection"
	var hr *httpRefusal
	switch {
	case errors.As(err, &hr):
		alert = hr.Error()
		r.step("server verdict", false, "the server refused the client certificate: %s", alert)
	case err != nil:
		alert = "alert " + alertOf(err)
		r.step("server verdict", false, "the server refused the client certificate: alert %q", alertOf(err))
	default:
		r.step("server verdict", false, "the server closed the connection right after the handshake")
	}
	if len(o.ClientChain) == 0 {
		return d.clientCertRequired()
	}
	if v := d.localClient(); v != nil {
		v.Explanation += fmt.Sprintf(" (the server: %s)", alert)
		return v
	}
	if lone(o.ClientChain) {
		return d.clientMissingIntermediate()
	}
	if v := d.foreignClient(alert); v != nil {
		return v
	}
	switch alertOf(orNil(err)) {
	case "certificate expired", "expired certificate":
		return d.serverClockOff()
	case "certificate revoked", "revoked certificate":
		return r.verdict(ClientCertRevoked, "the server says the client certificate is revoked", "get a new identity: enroll again with a new join token")
	case "unknown certificate authority":
		return d.unknownClientCA()
	case "certificate required":
		return d.clientCertRequired()
	case "access denied":
		return r.verdict(IdentityRefused, "the server authenticated the client but denies it access", "ask the service owner to allow this identity")
	case "bad certificate", "":
		return d.policyOrRevocation(alert)
	}
	return r.verdict(ClientCertRefused, fmt.Sprintf("the server refused the client certificate (%s), which is valid, complete and of the server's trust domain here; the server gives no more reason", alert),
		"read the server's log for the reason (a mutual proxy logs it in words), or run `mutual diagnose --listen` with the server's bundle to see what a server sees of this certificate")
}

func orNil(err error) error {
	if err == nil {
		return io.EOF
	}
	return err
}

// foreignClient: the client and the server are of different trust
// domains, and the server does not know the client's.
func (d *diagnosis) foreignClient(alert string) *Report {
	if len(d.chain) == 0 {
		return nil
	}
	clientTD, cok := trustDomainOf(d.o.ClientChain[0])
	serverTD, sok := trustDomainOf(d.chain[0])
	if !cok || !sok || clientTD == serverTD {
		return nil
	}
	d.r.step("trust domain", false, "the client is of %s, the server of %s", clientTD, serverTD)
	return d.r.verdict(ForeignTrustDomain, fmt.Sprintf("the server (trust domain %s) refused a client of another trust domain, %s (%s): it trusts no root of %s", serverTD, clientTD, alert, clientTD),
		fmt.Sprintf("federate: add %s's bundle to the server's side (mutual federation add %s) and allow the identity in its policy; or use an identity of %s", clientTD, clientTD, serverTD))
}

// serverClockOff: the server says our certificate expired, while by this
// machine's clock it is valid: the server's clock is off.
func (d *diagnosis) serverClockOff() *Report {
	leaf := d.o.ClientChain[0]
	now := d.o.Now()
	return d.r.verdict(ClockSkew, fmt.Sprintf("the server says the client certificate expired, yet by this machine's clock (%s) it is valid from %s until %s: the server's clock is at least %s ahead (or before %s)",
		now.UTC().Format(time.RFC3339), leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339), leaf.NotAfter.Sub(now).Round(time.Second), leaf.NotBefore.UTC().Format(time.RFC3339)),
		"set the server's clock right (enable NTP on the server: timedatectl set-ntp true); if this machine's clock is the wrong one, compare both with date -u")
}

// unknownClientCA: the server does not know the CA of our chain: a root
// of the same name with another key is a rotation on one side.
func (d *diagnosis) unknownClientCA() *Report {
	top := d.o.ClientChain[len(d.o.ClientChain)-1]
	for _, a := range d.p.acceptable {
		if string(a) == string(top.RawIssuer) {
			d.r.step("client certificate", false, "the server lists a CA named %q, the root of this client's chain, yet does not know the chain", top.Issuer.String())
			return d.r.verdict(RootRotated, fmt.Sprintf("the root %q was rotated on one side only: the server trusts a root of that name whose key differs from the one that signed this client's chain", top.Issuer.String()),
				"distribute the current bundle to the server (its client CA file, or let the agent do it); during a rotation, trust the old and the new root together")
		}
	}
	return d.r.verdict(ClientCANotAccepted, fmt.Sprintf("the server does not trust the CA that issued the client certificate (the chain ends at %q)", top.Issuer.String()),
		"use an identity from the server's CA, or add this CA's root to the server's client bundle")
}

// policyOrRevocation: a valid certificate of the server's own trust
// domain, refused without a reason: a policy, or a revocation the server
// knows of. The client's revocation sources tell them apart.
func (d *diagnosis) policyOrRevocation(alert string) *Report {
	r, o := d.r, d.o
	id := describeLeaf(o.ClientChain[0])
	if len(d.clientRevocationDown) > 0 {
		return r.verdict(RevocationUnavailable, fmt.Sprintf("the server refused %s (%s), and the client certificate's revocation status cannot be known: %s; a server that fails closed refuses exactly then",
			id, alert, strings.Join(d.clientRevocationDown, "; ")),
			"bring the CA's CRL/OCSP service back, or have the server cache the last answer longer; the server fails closed, which is right")
	}
	if !d.clientVerifies() {
		return r.verdict(ClientCANotAccepted, fmt.Sprintf("the server refused %s (%s), and the client's chain does not verify against the client's own bundle either", id, alert),
			"use an identity from the server's CA, or add this CA's root to the server's client bundle")
	}
	if d.clientRevocationGood {
		return r.verdict(IdentityRefused, fmt.Sprintf("the server refused %s (%s), which is valid, of its trust domain and not revoked (its CA says good): its policy does not allow this identity (a mutual proxy in tcp mode refuses such identities in the handshake)", id, alert),
			"add a rule allowing this identity to the server's policy (mutual proxy --allow or its policy file), or use an identity that is allowed")
	}
	return r.undecided(fmt.Sprintf("the server refused %s (%s), which is valid and of its trust domain: either its policy does not allow this identity, or it knows the certificate as revoked (the certificate names no CRL or OCSP to check from here)", id, alert),
		fmt.Sprintf("ask the CA whether serial %s is revoked (mutual cert list, or its CRL); if it is not, the server's policy refuses %s: allow it (mutual proxy --allow); the server's log names the reason", pki.FormatSerial(o.ClientChain[0].SerialNumber), id),
		IdentityRefused, ClientCertRevoked)
}

// clientVerifies reports whether the client's own chain verifies for client
// authentication against the trusted roots.
func (d *diagnosis) clientVerifies() bool {
	o := d.o
	if len(o.ClientChain) == 0 || len(o.Roots) == 0 {
		return false
	}
	_, err := pki.VerifyChain(o.ClientChain, o.Roots, o.Now(), x509.ExtKeyUsageClientAuth)
	return err == nil
}

// h2Only: the server closed a connection that negotiated no application
// protocol, and keeps one that negotiates h2 (as gRPC servers do, which
// accept the TLS handshake of an HTTP/1.1 client and then drop it).
func (d *diagnosis) h2Only(ctx context.Context) *Report {
	p := d.probeAgain(ctx, variant{alpn: []string{"h2"}})
	if p == nil || p.err != nil || p.state.NegotiatedProtocol != "h2" || p.closedEarly || p.postAlert != nil {
		return nil
	}
	offered := strings.Join(d.alpn(), ", ")
	d.r.step("alpn", false, "offering %s, no protocol was agreed and the server closed the connection; offering h2, it answers", offered)
	return d.r.verdict(ALPNMismatch, fmt.Sprintf("the server speaks HTTP/2 only (it accepts h2): a client offering %s gets the handshake and is then dropped", offered),
		"the server speaks HTTP/2 only: use an HTTP/2 client (curl --http2, a gRPC client, nginx grpc_pass), or enable HTTP/1.1 on the server")
}

// httpRefusal is a refusal of the client certificate in an HTTP answer
// after the handshake (nginx answers 400 instead of an alert).
type httpRefusal struct {
	status int
	words  string
}

func (e *httpRefusal) Error() string { return fmt.Sprintf("HTTP %d %q", e.status, e.words) }

// nginx's answers (400) when ssl_verify_client refuses a client.
var nginxRefusals = []string{"No required SSL certificate was sent", "The SSL certificate error"}

// refusesCertificate: the answer is an HTTP server's refusal of the client
// certificate (nginx verifies after the handshake and answers 400).
func (a *httpAnswer) refusesCertificate() bool { return a.nginxWords() != "" }

func (a *httpAnswer) nginxWords() string {
	if a.status != http.StatusBadRequest {
		return ""
	}
	for _, w := range nginxRefusals {
		if strings.Contains(a.body, w) {
			return w
		}
	}
	return ""
}
