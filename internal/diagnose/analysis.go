package diagnose

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/internal/pki"
)

// alertNames are the TLS alerts a server sends about a client certificate
// or a handshake, as crypto/tls words them.
var alertNames = []string{
	"bad certificate", "unsupported certificate", "certificate revoked", "revoked certificate",
	"certificate expired", "expired certificate", "certificate unknown", "unknown certificate",
	"unknown certificate authority", "access denied", "certificate required",
	"handshake failure", "protocol version not supported", "insufficient security", "illegal parameter",
	"decrypt error", "error decrypting message", "internal error",
}

func isAlert(err error) bool {
	if err == nil {
		return false
	}
	return strings.Contains(err.Error(), "remote error: tls:")
}

func alertOf(err error) string {
	msg := err.Error()
	best := ""
	for _, a := range alertNames {
		if strings.Contains(msg, "remote error: tls: "+a) && len(a) > len(best) {
			best = a
		}
	}
	if best != "" {
		return best
	}
	if i := strings.Index(msg, "remote error: tls: "); i >= 0 {
		return msg[i+len("remote error: tls: "):]
	}
	return ""
}

// classifyHandshakeError explains a failed probe handshake; nil means the
// failure is about certificates and later checks explain it.
func classifyHandshakeError(ctx context.Context, r *Report, o Options, p *probe) *Report {
	err := p.err
	var rhe tls.RecordHeaderError
	if errors.As(err, &rhe) {
		r.step("tls", false, "the server answered with bytes that are not TLS (%q...)", printable(rhe.RecordHeader[:]))
		hint := "the port serves plaintext: use http:// or the service's TLS port"
		if bytes.HasPrefix(rhe.RecordHeader[:], []byte("HTTP")) {
			hint = "the port serves plain HTTP: use http://, or put `mutual proxy inbound` in front of it"
		}
		return r.verdict(NotTLS, "the server does not speak TLS on "+o.Addr, hint)
	}
	alert := alertOf(err)
	switch alert {
	case "protocol version not supported", "handshake failure", "insufficient security":
		if p.requested {
			break // a refused (or missing) client certificate, below
		}
		versions := supportedVersions(ctx, o)
		r.step("tls", false, "the server refused the handshake: %s (versions it accepts from us: %s)", alert, orNone(versions))
		return r.verdict(ProtocolMismatch, fmt.Sprintf("no TLS version or cipher suite in common with the server (%s)", alert),
			"mutual speaks TLS 1.3 and TLS 1.2 with AEAD suites; enable one of those on the server (or --tls12 on a mutual proxy)")
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
		if p.requested && !p.sentCert {
			r.step("tls", false, "the server asked for a client certificate and closed the connection when none came")
			return r.verdict(ClientCertRequired, "the server requires a client certificate and none was given",
				"pass the client identity: --identity-dir DIR (or --cert, --key and --bundle)")
		}
		r.step("tls", false, "the server closed the connection during the handshake: %v", err)
		return r.verdict(NotTLS, "the server closed the connection during the TLS handshake (it may not speak TLS on this port, or refuses this client's address)",
			"check the port and the server's logs")
	}
	if alert != "" {
		// The server objected during the handshake (TLS 1.2 sends its verdict on
		// the client certificate here): first what the request said and what
		// is wrong locally.
		if p.requested && p.sentCert {
			for _, n := range p.acceptable {
				r.AcceptableCAs = append(r.AcceptableCAs, rdnString(n))
			}
			if c := checkClient(ctx, r, o, p); c != nil {
				return c
			}
		}
		return serverRefusedDuring(r, o, p, alert)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		r.step("tls", false, "the server did not complete the handshake within %s", o.Timeout)
		return r.verdict(NotTLS, "the server accepted the connection but never answered the TLS handshake: it is probably not a TLS service", "check the port")
	}
	r.step("tls", false, "handshake failed: %v", err)
	return r.verdict(ProtocolMismatch, "the TLS handshake failed: "+err.Error(), "check the server's TLS configuration")
}

func printable(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		if c >= 32 && c < 127 {
			sb.WriteByte(c)
		} else {
			sb.WriteString(".")
		}
	}
	return sb.String()
}

func orNone(v []string) string {
	if len(v) == 0 {
		return "none of TLS 1.2 and 1.3"
	}
	return strings.Join(v, ", ")
}

// supportedVersions probes TLS 1.3 and 1.2 separately.
func supportedVersions(ctx context.Context, o Options) []string {
	var out []string
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		conn, err := (&net.Dialer{Timeout: o.Timeout}).DialContext(ctx, "tcp", o.Addr)
		if err != nil {
			continue
		}
		p := runProbe(ctx, conn, Options{Addr: o.Addr, ServerName: o.ServerName, Timeout: o.Timeout, ClientChain: o.ClientChain, ClientKey: o.ClientKey}, v)
		if p.err == nil || (alertOf(p.err) != "protocol version not supported" && alertOf(p.err) != "handshake failure") {
			out = append(out, tls.VersionName(v))
		}
	}
	return out
}

// checkServer verifies the server's chain independently (crypto/x509, the
// trusted roots, the server name) and explains the first failure.
func checkServer(r *Report, o Options, chain []*x509.Certificate) *Report {
	now := o.Now()
	leaf := chain[0]
	roots := pki.CertPool(o.Roots)
	if o.Roots == nil {
		if sys, err := x509.SystemCertPool(); err == nil {
			roots = sys
		}
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: pki.CertPool(chain[1:]), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	var ce x509.CertificateInvalidError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	switch {
	case err == nil:
	case errors.As(err, &ce) && ce.Reason == x509.Expired:
		c := ce.Cert
		if now.Before(c.NotBefore) {
			skew := c.NotBefore.Sub(now)
			r.step("server chain", false, "%q is not valid before %s (%s from now)", c.Subject.String(), c.NotBefore.UTC().Format(time.RFC3339), skew.Round(time.Second))
			hint := "check the clocks: this machine's and the CA's"
			if skew < 24*time.Hour {
				hint = fmt.Sprintf("a clock is wrong by about %s: check NTP on this machine and on the CA (mutual back-dates certificates by one minute for small skews)", skew.Round(time.Second))
			}
			return r.verdict(ServerNotYetValid, fmt.Sprintf("the server's certificate %q is not valid yet", c.Subject.String()), hint)
		}
		r.step("server chain", false, "%q expired at %s (%s ago)", c.Subject.String(), c.NotAfter.UTC().Format(time.RFC3339), now.Sub(c.NotAfter).Round(time.Second))
		fix := "renew the server's certificate (mutual cert renew, or let the agent renew it) and make sure the server reloads it"
		if now.Sub(c.NotAfter) < 10*time.Minute {
			fix += "; if it should still be valid, check this machine's clock"
		}
		return r.verdict(ServerExpired, fmt.Sprintf("the server's certificate %q expired %s ago", c.Subject.String(), now.Sub(c.NotAfter).Round(time.Second)), fix)
	case errors.As(err, &ce) && ce.Reason == x509.IncompatibleUsage:
		r.step("server chain", false, "the server's certificate is not valid for server authentication (extended key usage: %v)", leaf.ExtKeyUsage)
		return r.verdict(ServerWrongUsage, "the server's certificate lacks the serverAuth extended key usage", "issue the server a certificate with serverAuth (every mutual certificate has it)")
	case errors.As(err, &ua) || strings.Contains(err.Error(), "unknown authority"):
		// Would the chain verify if we had its intermediate?
		if len(chain) == 1 && !isSelfSigned(leaf) {
			for _, c := range o.ClientChain {
				if c.IsCA && leaf.CheckSignatureFrom(c) == nil {
					r.step("server chain", false, "the server sent its certificate alone; its issuer %q is an intermediate it did not send", leaf.Issuer.String())
					return r.verdict(MissingIntermediate, "the server does not send its intermediate certificate, so clients cannot build a chain to the root",
						"serve the full chain (leaf then intermediate): mutual writes it in cert.pem; for nginx use ssl_certificate with the whole file")
				}
			}
			r.step("server chain", false, "the server sent only its own certificate, issued by %q, which the trusted roots do not include", leaf.Issuer.String())
			return r.verdict(MissingIntermediate, fmt.Sprintf("the server sends no intermediate, and its issuer %q is not a trusted root", leaf.Issuer.String()),
				"serve the full chain (leaf then intermediate), or if this is another CA, add its root to the bundle")
		}
		top := chain[len(chain)-1]
		r.step("server chain", false, "the chain ends at %q, which the trusted roots do not include", top.Issuer.String())
		return r.verdict(ServerUnknownCA, fmt.Sprintf("the server's certificate is issued by a CA this client does not trust (%q)", top.Issuer.String()),
			"use the bundle of the server's trust domain (--bundle or the identity directory's bundle.pem), or get the server a certificate from your CA")
	case errors.As(err, &he):
		r.step("server chain", false, "the certificate is for %s, not %q", namesOf(leaf), o.ServerName)
	default:
		r.step("server chain", false, "%v", err)
		return r.verdict(ServerUnknownCA, "the server's chain does not verify: "+err.Error(), "check the server's certificate and the trusted roots")
	}
	// The name, checked separately so that a chain problem is reported first.
	// SPIFFE clients (mutual proxy outbound, tlsconfig, go-spiffe) do not
	// check it: the SPIFFE ID authenticates the server. It is a failure
	// only when asked for (--server-name) or when no --expect says which
	// SPIFFE ID the server must have, as for curl and browsers.
	if err := leaf.VerifyHostname(o.ServerName); err != nil {
		if o.nameOptional {
			r.step("server chain", true, "verifies to a trusted root")
			r.step("server name", true, "the certificate does not name %q (%s): not needed, SPIFFE clients such as mutual proxy outbound authenticate the server by its SPIFFE ID (--expect); clients that check host names (curl, browsers, --server-name) would refuse it",
				o.ServerName, hostNamesOf(leaf))
		} else {
			if !containsStep(r, "server chain") {
				r.step("server chain", false, "the certificate is for %s, not %q", namesOf(leaf), o.ServerName)
			}
			fix := "connect by a name the certificate carries (--server-name), or reissue it with that name (mutual token create --dns NAME / --ip IP) for clients that check host names (curl, browsers)"
			if o.Expect == nil {
				fix += "; mutual proxy outbound and tlsconfig clients need no name: they authenticate the server by its SPIFFE ID, so diagnose with --expect SPIFFE-ID to check what they check"
			} else {
				fix += "; or drop --server-name: with --expect, mutual proxy outbound and tlsconfig clients authenticate the server by its SPIFFE ID alone"
			}
			return r.verdict(NameMismatch, fmt.Sprintf("the server's certificate does not name %q (%s)", o.ServerName, hostNamesOf(leaf)), fix)
		}
	} else {
		r.step("server chain", true, "verifies to a trusted root, valid for %q", o.ServerName)
	}
	if o.Expect != nil {
		id, err := x509svid.IDFromCert(leaf)
		if err != nil || !o.Expect.Match(id) {
			got := "no SPIFFE ID"
			if err == nil {
				got = id.String()
			}
			r.step("server identity", false, "the server is %s, expected %s", got, o.Expect)
			return r.verdict(SPIFFEIDMismatch, fmt.Sprintf("the server's identity is %s, not what this client expects (%s)", got, o.Expect),
				"connect to the right service, or change the expectation (--expect)")
		}
		r.step("server identity", true, "%s matches %s", id, o.Expect)
	}
	return nil
}

func containsStep(r *Report, name string) bool {
	for _, s := range r.Steps {
		if s.Name == name {
			return true
		}
	}
	return false
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

func namesOf(c *x509.Certificate) string {
	var n []string
	n = append(n, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		n = append(n, ip.String())
	}
	for _, u := range c.URIs {
		n = append(n, u.String())
	}
	if len(n) == 0 {
		return "no names at all"
	}
	return strings.Join(n, ", ")
}

// hostNamesOf says which DNS and IP names c carries, and its SPIFFE ID.
func hostNamesOf(c *x509.Certificate) string {
	var n []string
	n = append(n, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		n = append(n, ip.String())
	}
	var uris []string
	for _, u := range c.URIs {
		uris = append(uris, u.String())
	}
	switch {
	case len(n) == 0 && len(uris) == 0:
		return "it names nothing at all"
	case len(n) == 0:
		return "it has no DNS or IP names, only the SPIFFE ID " + strings.Join(uris, ", ")
	}
	return "it names " + strings.Join(append(n, uris...), ", ")
}

func rdnString(der []byte) string {
	var seq pkix.RDNSequence
	if _, err := asn1.Unmarshal(der, &seq); err != nil {
		return fmt.Sprintf("%x", der)
	}
	var n pkix.Name
	n.FillFromRDNSequence(&seq)
	return n.String()
}

// checkClient examines the client identity against what the server asked.
func checkClient(ctx context.Context, r *Report, o Options, p *probe) *Report {
	if len(o.ClientChain) == 0 {
		if p.requested {
			r.step("client certificate", false, "none given")
			if p.postAlert != nil || p.closedEarly || p.httpStatus == 0 {
				return r.verdict(ClientCertRequired, "the server requires a client certificate and none was given",
					"pass the client identity: --identity-dir DIR (or --cert, --key and --bundle)")
			}
		}
		return nil
	}
	leaf := o.ClientChain[0]
	now := o.Now()
	if o.ClientKey != nil {
		if pub, ok := publicOf(o.ClientKey); !ok || !pki.PublicKeysEqual(leaf.PublicKey, pub) {
			r.step("client certificate", false, "the private key does not belong to the certificate")
			return r.verdict(KeyMismatch, "the client's private key does not match its certificate (the server refuses the handshake: the signature does not verify)",
				"use the key.pem written with this cert.pem; after a renewal both files are replaced, so copy them together")
		}
	}
	switch {
	case now.After(leaf.NotAfter):
		r.step("client certificate", false, "%s expired %s ago", describeLeaf(leaf), now.Sub(leaf.NotAfter).Round(time.Second))
		return r.verdict(ClientCertExpired, fmt.Sprintf("the client certificate %s expired at %s", describeLeaf(leaf), leaf.NotAfter.UTC().Format(time.RFC3339)),
			"renew it (mutual cert renew --dir DIR while it is valid; once expired, enroll again with a new join token)")
	case now.Before(leaf.NotBefore):
		r.step("client certificate", false, "%s is not valid before %s", describeLeaf(leaf), leaf.NotBefore.UTC().Format(time.RFC3339))
		return r.verdict(ClientCertExpired, "the client certificate is not valid yet: a clock is wrong", "check this machine's clock and the CA's")
	}
	if !hasEKU(leaf, x509.ExtKeyUsageClientAuth) {
		r.step("client certificate", false, "%s lacks the clientAuth extended key usage (it has %v)", describeLeaf(leaf), leaf.ExtKeyUsage)
		return r.verdict(ClientWrongUsage, "the client certificate is not valid for client authentication (no clientAuth extended key usage)",
			"use a certificate with clientAuth: every certificate mutual issues has it")
	}
	if p.requested && len(p.acceptable) > 0 {
		issuers := map[string]bool{}
		for _, c := range o.ClientChain {
			issuers[string(c.RawIssuer)] = true
			issuers[string(c.RawSubject)] = true
		}
		accepted := false
		for _, a := range p.acceptable {
			if issuers[string(a)] {
				accepted = true
			}
		}
		if !accepted {
			r.step("client certificate", false, "issued under %q, which is not among the CAs the server accepts", topIssuer(o.ClientChain))
			return r.verdict(ClientCANotAccepted, fmt.Sprintf("the client certificate comes from a CA the server does not accept (it accepts: %s)", strings.Join(r.AcceptableCAs, "; ")),
				"use an identity from a CA the server trusts, or add this CA's root to the server's client CA bundle")
		}
	}
	if o.Revoked != nil && len(o.ClientChain) > 1 {
		rctx, cancel := context.WithTimeout(ctx, o.Timeout)
		revoked, err := o.Revoked(rctx, leaf, o.ClientChain[1])
		cancel()
		switch {
		case err != nil:
			r.step("client revocation", true, "not checked: %v", err)
		case revoked:
			r.step("client revocation", false, "the CA says %s (serial %s) is revoked", describeLeaf(leaf), pki.FormatSerial(leaf.SerialNumber))
			return r.verdict(ClientCertRevoked, fmt.Sprintf("the client certificate (serial %s) is revoked", pki.FormatSerial(leaf.SerialNumber)),
				"get a new identity: enroll again with a new join token (a revoked certificate cannot renew)")
		default:
			r.step("client revocation", true, "the CA says the certificate is good")
		}
	}
	r.step("client certificate", true, "%s, valid, clientAuth, %s", describeLeaf(leaf), pki.KeyDescription(leaf.PublicKey))
	return nil
}

func topIssuer(chain []*x509.Certificate) string { return chain[len(chain)-1].Issuer.String() }

func hasEKU(c *x509.Certificate, u x509.ExtKeyUsage) bool {
	if len(c.ExtKeyUsage) == 0 {
		return true
	}
	for _, e := range c.ExtKeyUsage {
		if e == u || e == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

func publicOf(k any) (crypto.PublicKey, bool) {
	if s, ok := k.(crypto.Signer); ok {
		return s.Public(), true
	}
	return nil, false
}

// serverRefusedDuring explains an alert received during the handshake.
func serverRefusedDuring(r *Report, o Options, p *probe, alert string) *Report {
	if !p.sentCert && (alert == "certificate required" || alert == "bad certificate" || alert == "handshake failure") {
		r.step("tls", false, "the server requires a client certificate (alert: %s)", alert)
		return r.verdict(ClientCertRequired, "the server requires a client certificate and none was given",
			"pass the client identity: --identity-dir DIR (or --cert, --key and --bundle)")
	}
	return serverRefused(r, o, p.err)
}

// serverRefused explains the server's alert about our certificate, using
// what we know locally to name the cause.
func serverRefused(r *Report, o Options, err error) *Report {
	alert := alertOf(err)
	r.step("server verdict", false, "the server refused the client certificate: alert %q", alert)
	if len(o.ClientChain) > 0 {
		// Local causes the alert may hide.
		if c := checkClient(context.Background(), &Report{}, Options{ClientChain: o.ClientChain, ClientKey: o.ClientKey, Now: o.Now, Timeout: o.Timeout}, &probe{}); c != nil {
			return r.verdict(c.Verdict, c.Explanation+fmt.Sprintf(" (the server said %q)", alert), c.Fix)
		}
	}
	switch alert {
	case "bad certificate":
		if clientVerifies(o) && len(r.AcceptableCAs) == 0 {
			// A valid, unexpired certificate of a CA this client trusts,
			// refused by a server that lists no CA names (as a mutual proxy,
			// which verifies against its SPIFFE bundle): its policy. A mutual
			// proxy in tcp mode refuses identities it does not allow at the
			// handshake, with this alert.
			return r.verdict(IdentityRefused, "the server refused a client certificate that is valid and from the trusted CA: most likely its policy does not allow this identity",
				"ask the service owner to allow this identity (mutual proxy --allow or its policy file); the server's log names the reason")
		}
	case "certificate expired", "expired certificate":
		return r.verdict(ClientCertExpired, "the server says the client certificate expired", "renew it (mutual cert renew), and check the clocks")
	case "certificate revoked", "revoked certificate":
		return r.verdict(ClientCertRevoked, "the server says the client certificate is revoked", "get a new identity: enroll again with a new join token")
	case "unknown certificate authority":
		return r.verdict(ClientCANotAccepted, "the server does not trust the CA that issued the client certificate", "use an identity from the server's CA, or add this CA's root to the server's client bundle")
	case "certificate required":
		return r.verdict(ClientCertRequired, "the server requires a client certificate", "pass the client identity: --identity-dir DIR")
	case "access denied":
		return r.verdict(IdentityRefused, "the server authenticated the client but denies it access", "ask the service owner to allow this identity")
	}
	return r.verdict(ClientCertRefused, fmt.Sprintf("the server refused the client certificate (%s): it may be revoked, from another trust domain, or not allowed by the server's policy", alert),
		"check the server's log for the reason (a mutual proxy logs it in words), or run `mutual diagnose --listen` to see what a server sees of this certificate")
}

// clientVerifies reports whether the client's own chain verifies for client
// authentication against the trusted roots.
func clientVerifies(o Options) bool {
	if len(o.ClientChain) == 0 || len(o.Roots) == 0 {
		return false
	}
	_, err := pki.VerifyChain(o.ClientChain, o.Roots, o.Now(), x509.ExtKeyUsageClientAuth)
	return err == nil
}
