package diagnose

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
)

// sniAlternatives are the server names to try when the certificate seen
// does not verify: none when one was sent, else the names the address
// resolves back to.
func (d *diagnosis) sniAlternatives(ctx context.Context) []string {
	if net.ParseIP(d.o.ServerName) == nil {
		return []string{""}
	}
	rctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	names, _ := net.DefaultResolver.LookupAddr(rctx, d.o.ServerName)
	var out []string
	for _, n := range names {
		if n = strings.TrimSuffix(n, "."); n != "" {
			out = append(out, n)
		}
	}
	return out
}

func sniWords(name string) string {
	if name == "" {
		return "without a server name (SNI)"
	}
	return fmt.Sprintf("with the server name (SNI) %q", name)
}

// otherCertificateBySNI: the server picks its certificate by SNI, and the
// one sent for the name used (or for none) is not the right one while
// another name gets a certificate that verifies.
func (d *diagnosis) otherCertificateBySNI(ctx context.Context) *Report {
	sent := d.o.ServerName
	if net.ParseIP(sent) != nil {
		sent = ""
	}
	for _, name := range d.sniAlternatives(ctx) {
		p := d.probeAgain(ctx, variant{sni: &name, noHTTP: true})
		if p == nil || len(p.state.PeerCertificates) == 0 {
			continue
		}
		other := p.state.PeerCertificates
		if bytes.Equal(other[0].Raw, d.chain[0].Raw) || d.verifyServer(other) != nil {
			continue
		}
		d.r.step("server name indication", false, "%s the server presents %s (issued by %q), which does not verify; %s it presents %s, which does",
			sniWords(sent), describeLeaf(d.chain[0]), d.chain[0].Issuer.String(), sniWords(name), describeLeaf(other[0]))
		fix := "make the right certificate the server's default (the one it serves without SNI or for unknown names), or have clients send the name"
		if name != "" {
			fix = fmt.Sprintf("connect by the name %s (or --server-name %s) so that the server picks the right certificate, or make that certificate the server's default", name, name)
		}
		return d.r.verdict(SNICertificate, fmt.Sprintf("the server picks its certificate by server name: %s it presents %s from %q, %s the right one (%s)",
			sniWords(sent), describeLeaf(d.chain[0]), topName(d.chain), sniWords(name), describeLeaf(other[0])), fix)
	}
	return nil
}

// compareWithoutSNI notes, for a server that verifies, whether a client
// that sends no server name would get another certificate.
func (d *diagnosis) compareWithoutSNI(ctx context.Context) {
	if net.ParseIP(d.o.ServerName) != nil {
		return
	}
	none := ""
	p := d.probeAgain(ctx, variant{sni: &none, noHTTP: true})
	if p == nil || len(p.state.PeerCertificates) == 0 || bytes.Equal(p.state.PeerCertificates[0].Raw, d.chain[0].Raw) {
		return
	}
	words := "verifies too"
	if d.verifyServer(p.state.PeerCertificates) != nil {
		words = "does not verify: clients that send no server name (connections by IP address) fail"
	}
	d.r.step("server name indication", true, "the server picks its certificate by name: without SNI it presents %s (issued by %q), which %s",
		describeLeaf(p.state.PeerCertificates[0]), p.state.PeerCertificates[0].Issuer.String(), words)
}

func topName(chain []*x509.Certificate) string { return chain[len(chain)-1].Issuer.String() }
