package diagnose

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/mutual-tls/mutual/internal/inspect"
)

// alertNames are the TLS alerts a server sends about a client certificate
// or a handshake, as crypto/tls words them.
var alertNames = []string{
	"bad certificate", "unsupported certificate", "certificate revoked", "revoked certificate",
	"certificate expired", "expired certificate", "certificate unknown", "unknown certificate",
	"unknown certificate authority", "access denied", "certificate required",
	"handshake failure", "protocol version not supported", "insufficient security", "illegal parameter",
	"decrypt error", "error decrypting message", "internal error", "no application protocol",
}

func isAlert(err error) bool {
	return err != nil && strings.Contains(err.Error(), "remote error: tls:")
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

// handshake connects and runs the labelled probe; it ends the diagnosis
// when the handshake itself failed for a reason later steps cannot explain
// better.
func (d *diagnosis) handshake(ctx context.Context) *Report {
	conn, v := d.connect(ctx)
	if v != nil {
		return v
	}
	p := d.runProbe(ctx, conn, variant{})
	d.p = p
	r := d.r
	d.chain = p.peer
	if p.err != nil {
		if v := d.classifyHandshakeError(ctx); v != nil {
			return v
		}
	}
	r.TLSVersion = tls.VersionName(p.state.Version)
	r.CipherSuite = tls.CipherSuiteName(p.state.CipherSuite)
	r.ALPN = p.state.NegotiatedProtocol
	if p.err == nil {
		alpn := "no ALPN"
		if r.ALPN != "" {
			alpn = "ALPN " + r.ALPN
		}
		r.step("tls", true, "handshake completed (probe without verification, for diagnosis only): %s, %s, %s", r.TLSVersion, r.CipherSuite, alpn)
	}
	if len(d.chain) == 0 {
		if p.err != nil {
			r.step("tls", false, "handshake failed: %v", p.err)
			return r.verdict(ProtocolMismatch, "the TLS handshake failed: "+p.err.Error(), "check the server's TLS configuration")
		}
		r.step("server certificate", false, "the server sent no certificate")
		return r.verdict(NotTLS, "the server presented no certificate", "configure the server's certificate")
	}
	r.ServerChain = inspect.Describe(d.chain, d.o.Now())
	r.step("server certificate", true, "%s, issued by %q, %s", describeLeaf(d.chain[0]), d.chain[0].Issuer.String(), r.ServerChain[0].Validity)
	return nil
}

// classifyHandshakeError explains a failed probe handshake; nil means the
// failure is about certificates and later checks explain it.
func (d *diagnosis) classifyHandshakeError(ctx context.Context) *Report {
	r, o, p := d.r, d.o, d.p
	err := p.err
	var rhe tls.RecordHeaderError
	var ne net.Error
	alert := alertOf(err)
	switch {
	case errors.As(err, &rhe):
		return d.plaintextAnswer(rhe)
	case alert == "no application protocol":
		return d.alpnRefused(ctx)
	case !p.requested && (alert == "protocol version not supported" || alert == "handshake failure" || alert == "insufficient security"):
		versions := d.supportedVersions(ctx)
		r.step("tls", false, "the server refused the handshake: %s (versions it accepts from us: %s)", alert, orNone(versions))
		return r.verdict(ProtocolMismatch, fmt.Sprintf("no TLS version or cipher suite in common with the server (%s)", alert),
			"mutual speaks TLS 1.3 and TLS 1.2 with AEAD suites; enable one of those on the server (or --tls12 on a mutual proxy)")
	case len(p.peer) > 0 && strings.Contains(err.Error(), "invalid signature by the server certificate"):
		// The server signed with a key that is not the first certificate's:
		// its chain is misordered, or its key and certificate do not match.
		r.step("tls", false, "the server's handshake signature does not verify with the first certificate it sent (probe without verification, for diagnosis only)")
		return nil
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET):
		return d.closedDuringHandshake()
	case alert != "":
		return d.refusedDuringHandshake(ctx, alert)
	case errors.As(err, &ne) && ne.Timeout():
		r.step("tls", false, "the server did not complete the handshake within %s", o.Timeout)
		return r.verdict(NotTLS, "the server accepted the connection but never answered the TLS handshake: it is probably not a TLS service", "check the port")
	}
	r.step("tls", false, "handshake failed: %v", err)
	return r.verdict(ProtocolMismatch, "the TLS handshake failed: "+err.Error(), "check the server's TLS configuration")
}

// plaintextAnswer: the server answered the ClientHello with bytes that
// are not TLS.
func (d *diagnosis) plaintextAnswer(rhe tls.RecordHeaderError) *Report {
	d.r.step("tls", false, "the server answered with bytes that are not TLS (%q...)", printable(rhe.RecordHeader[:]))
	hint := "the port serves plaintext: use http:// or the service's TLS port"
	if bytes.HasPrefix(rhe.RecordHeader[:], []byte("HTTP")) {
		hint = "the port serves plain HTTP: use http://, or put `mutual proxy inbound` in front of it"
	}
	return d.r.verdict(NotTLS, "the server does not speak TLS on "+d.o.Addr, hint)
}

func (d *diagnosis) closedDuringHandshake() *Report {
	r, p := d.r, d.p
	if p.requested && !p.sentCert {
		r.step("tls", false, "the server asked for a client certificate and closed the connection when none came")
		return d.clientCertRequired()
	}
	r.step("tls", false, "the server closed the connection during the handshake: %v", p.err)
	return r.verdict(NotTLS, "the server closed the connection during the TLS handshake (it may not speak TLS on this port, or refuses this client's address)",
		"check the port and the server's logs")
}

// refusedDuringHandshake: the server objected during the handshake (TLS
// 1.2 sends its verdict on the client certificate here): first what the
// request said and what is wrong locally, then the alert.
func (d *diagnosis) refusedDuringHandshake(ctx context.Context, alert string) *Report {
	r, p := d.r, d.p
	if p.requested && p.sentCert {
		for _, n := range p.acceptable {
			r.AcceptableCAs = append(r.AcceptableCAs, rdnString(n))
		}
		if v := d.checkClient(ctx); v != nil {
			return v
		}
	}
	if !p.sentCert && (alert == "certificate required" || alert == "bad certificate" || alert == "handshake failure") {
		r.step("tls", false, "the server requires a client certificate (alert: %s)", alert)
		return d.clientCertRequired()
	}
	return d.serverRefused(ctx, p.err)
}

// alpnRefused explains a no_application_protocol alert: it finds which of
// the usual protocols the server speaks.
func (d *diagnosis) alpnRefused(ctx context.Context) *Report {
	var speaks []string
	for _, proto := range []string{"h2", "http/1.1"} {
		if p := d.probeAgain(ctx, variant{alpn: []string{proto}, noHTTP: true}); p != nil && p.err == nil && p.state.NegotiatedProtocol == proto {
			speaks = append(speaks, proto)
		}
	}
	offered := strings.Join(d.alpn(), ", ")
	d.r.step("tls", false, "the server refused every application protocol offered (ALPN %s): alert no application protocol; it accepts: %s", offered, orText(speaks, "neither h2 nor http/1.1"))
	fix := "configure the client to speak what the server accepts, or add the client's protocol to the server's ALPN list"
	if len(speaks) == 1 && speaks[0] == "h2" {
		fix = "the server speaks HTTP/2 only: enable HTTP/2 on the client (curl --http2, nginx grpc_pass or proxy_http_version is not enough: use an h2-capable client), or add http/1.1 to the server's ALPN list"
	}
	return d.r.verdict(ALPNMismatch, fmt.Sprintf("the server speaks none of the application protocols offered (%s); it accepts %s", offered, orText(speaks, "neither h2 nor http/1.1")), fix)
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

func orNone(v []string) string { return orText(v, "none of TLS 1.2 and 1.3") }

func orText(v []string, none string) string {
	if len(v) == 0 {
		return none
	}
	return strings.Join(v, ", ")
}

func joinComma(v []string) string { return strings.Join(v, ", ") }

// supportedVersions probes TLS 1.3 and 1.2 separately.
func (d *diagnosis) supportedVersions(ctx context.Context) []string {
	var out []string
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		p := d.probeAgain(ctx, variant{version: v, noHTTP: true})
		if p == nil {
			continue
		}
		if p.err == nil || (alertOf(p.err) != "protocol version not supported" && alertOf(p.err) != "handshake failure") {
			out = append(out, tls.VersionName(v))
		}
	}
	return out
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
