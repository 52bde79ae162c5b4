package diagnose

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// enforcement checks that the server enforces mutual TLS: it asks for a
// client certificate, and refuses a client without one.
func (d *diagnosis) enforcement(ctx context.Context) *Report {
	p := d.p
	withID := len(d.o.ClientChain) > 0
	switch {
	case !p.requested && withID:
		return d.notRequested()
	case !p.requested:
		return nil // one-way TLS is what was asked for
	}
	anon := p
	if withID {
		if anon = d.probeAgain(ctx, variant{anonymous: true}); anon == nil {
			return nil
		}
	}
	if !accepted(anon) {
		d.r.step("enforcement", true, "a client without a certificate is refused")
		return nil
	}
	if d.plaintextAccepted(ctx) {
		d.r.step("enforcement", false, "a client without a certificate gets in, and so does a plaintext (non-TLS) client")
		return d.r.verdict(PermissiveMode, "the server accepts clients without a certificate and even plaintext connections on the same port: a mutual proxy left in permissive (optional mTLS) mode",
			"once every client has an identity, switch the proxy to strict mode (mutual proxy --mode strict); its metrics (mutual_proxy_connections_total{kind=\"plaintext\"}) show who still connects without one")
	}
	d.r.step("enforcement", false, "the server asks for a client certificate, but a client without one gets in")
	return d.r.verdict(ClientCertOptional, "the server requests a client certificate but does not require one: a client without a certificate is accepted too",
		"require the certificate (nginx ssl_verify_client on, Go tls.RequireAndVerifyClientCert, mutual proxy --mode strict)")
}

// accepted: the server let the probe's client in.
func accepted(p *probe) bool {
	if p.err != nil || p.postAlert != nil || p.closedEarly {
		return false
	}
	return p.http == nil || (p.http.status != http.StatusUnauthorized && p.http.status != http.StatusForbidden && !p.http.refusesCertificate())
}

// notRequested: a client identity was given, and the server never asked
// for it.
func (d *diagnosis) notRequested() *Report {
	r, a := d.r, d.p.http
	if a == nil || (a.status != http.StatusUnauthorized && a.status != http.StatusForbidden) {
		r.step("enforcement", false, "the server never asks for a client certificate: the client's identity is not used")
		return r.verdict(ClientCertNotRequested, "the server never asks for a client certificate: this is one-way TLS, any client gets in, and the service cannot know who calls",
			"make the server require client certificates (nginx ssl_verify_client on with ssl_client_certificate, Go tls.RequireAndVerifyClientCert), or put mutual proxy inbound in front of the service")
	}
	body := strings.TrimSpace(a.body)
	r.step("server verdict", false, "HTTP %d (%s) although the server never asked for a client certificate", a.status, body)
	switch {
	case a.status == http.StatusUnauthorized && a.auth != "":
		return r.verdict(HTTPUnauthorized, fmt.Sprintf("the service wants credentials of its own (HTTP 401, WWW-Authenticate: %q), not a client certificate: the TLS endpoint never asks for one", a.auth),
			"send the credentials the service asks for (a token or password, as WWW-Authenticate says)")
	case strings.Contains(strings.ToLower(body), "certificate"):
		return r.verdict(ClientCertDropped, fmt.Sprintf("the service wants a client certificate (HTTP %d: %q), but the TLS endpoint in front of it never asks for one: a TLS-terminating load balancer or proxy drops the client certificate", a.status, body),
			"make the load balancer request the client certificate and pass it on (nginx: ssl_verify_client on and proxy_set_header X-Client-Cert $ssl_client_escaped_cert), or pass TLS through to the service (TCP mode) so that the service terminates mutual TLS itself")
	}
	return r.undecided(fmt.Sprintf("HTTP %d (%q) after a handshake in which the server never asked for a client certificate: either the service refuses on other grounds, or a TLS-terminating load balancer in front of it drops the client certificate the service expects", a.status, body),
		"connect to the service itself, bypassing the load balancer, with the same identity (mutual diagnose SERVICE:PORT --identity-dir DIR): if it then asks for the certificate and accepts, the balancer drops it",
		ClientCertDropped, IdentityRefused)
}

// plaintextAccepted: the port forwards a plaintext HTTP request instead of
// refusing it (as a mutual proxy in permissive mode does).
func (d *diagnosis) plaintextAccepted(ctx context.Context) bool {
	conn, err := d.dial(ctx)
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(d.o.Timeout))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: mutual-diagnose\r\nConnection: close\r\n\r\n", d.path(), d.o.ServerName)
	b, _ := io.ReadAll(io.LimitReader(conn, 512))
	if len(b) == 0 || b[0] == 0x15 { // nothing, or a TLS alert record
		return false
	}
	// TLS servers that recognise plain HTTP answer 400 and say so.
	s := strings.ToLower(string(b))
	return !strings.Contains(s, "https") && !strings.Contains(s, "tls")
}
