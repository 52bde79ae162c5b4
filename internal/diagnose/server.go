package diagnose

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// serverChain judges the server's chain as a client would, independently
// of the probe: its order, its verification against the trusted roots, the
// name, the SPIFFE ID.
func (d *diagnosis) serverChain(ctx context.Context) *Report {
	if v := d.leafFirst(); v != nil {
		return v
	}
	if err := d.verifyServer(d.chain); err != nil {
		if v := d.otherCertificateBySNI(ctx); v != nil {
			return v
		}
		if v := d.explainServerChainError(err); v != nil {
			return v
		}
	}
	if v := d.checkServerName(); v != nil {
		return v
	}
	if v := d.checkServerID(); v != nil {
		return v
	}
	if v := d.chainHygiene(); v != nil {
		return v
	}
	if d.p.err != nil {
		// The chain is fine, yet the server's signature did not verify.
		d.r.step("server key", false, "the server signs with a key that is not its certificate's")
		return d.r.verdict(KeyMismatch, fmt.Sprintf("the server's private key does not match its certificate %s: no client can complete the handshake", describeLeaf(d.chain[0])),
			"configure the server with the key written together with its certificate (key.pem beside cert.pem)")
	}
	d.compareWithoutSNI(ctx)
	return nil
}

func (d *diagnosis) roots() *x509.CertPool {
	if d.o.Roots != nil {
		pool := x509.NewCertPool()
		for _, c := range d.o.Roots {
			pool.AddCert(c)
		}
		return pool
	}
	if sys, err := x509.SystemCertPool(); err == nil {
		return sys
	}
	return x509.NewCertPool()
}

// verifyServer verifies chain (leaf first) for server authentication; the
// name is checked on its own, after.
func (d *diagnosis) verifyServer(chain []*x509.Certificate) error {
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: d.roots(), Intermediates: inter, CurrentTime: d.o.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

// leafFirst: a server whose first certificate is a CA and that sends a
// leaf further down has its chain in the wrong order; every client takes
// the first certificate as the server's.
func (d *diagnosis) leafFirst() *Report {
	if !d.chain[0].IsCA {
		return nil
	}
	for i, c := range d.chain[1:] {
		if !c.IsCA {
			d.r.step("server chain", false, "the first certificate sent is the CA %q; the server's own certificate %s comes at position %d", d.chain[0].Subject.String(), describeLeaf(c), i+2)
			return d.r.verdict(ChainMisordered, fmt.Sprintf("the server sends its chain in the wrong order: %q first, its own certificate %s at position %d", d.chain[0].Subject.String(), describeLeaf(c), i+2),
				"serve the leaf first, then its intermediate (the order of mutual's cert.pem); for nginx, ssl_certificate must start with the server's certificate")
		}
	}
	return nil
}

// chainHygiene: a chain that verifies but whose intermediates are out of
// order or include certificates that belong to no path. Go and OpenSSL
// sort it out; TLS 1.2 (RFC 5246) requires the order and strict clients
// (Java's older stacks, some embedded TLS libraries) refuse.
func (d *diagnosis) chainHygiene() *Report {
	chain := d.chain
	for i := 1; i < len(chain); i++ {
		if chain[i-1].CheckSignatureFrom(chain[i]) == nil {
			continue
		}
		issuer := -1
		for j, c := range chain {
			if j != i-1 && chain[i-1].CheckSignatureFrom(c) == nil {
				issuer = j
			}
		}
		related := false
		for j, c := range chain {
			if j != i && c.CheckSignatureFrom(chain[i]) == nil {
				related = true
			}
		}
		var what string
		switch {
		case !related:
			what = fmt.Sprintf("certificate %d (%q) signs nothing in the chain: it is unrelated", i+1, chain[i].Subject.String())
		case issuer >= 0:
			what = fmt.Sprintf("the issuer of certificate %d comes at position %d, not right after it", i, issuer+1)
		default:
			continue
		}
		d.r.step("server chain", false, "verifies, but %s", what)
		return d.r.verdict(ChainMisordered, "the server's chain verifies here, but "+what+": clients that require the order of RFC 5246 refuse it",
			"serve exactly the leaf then its intermediate(s), each followed by its issuer, and nothing else (mutual's cert.pem is in that order)")
	}
	return nil
}

// explainServerChainError names the cause of a failed verification; nil
// when only the name is wrong (checkServerName says so).
func (d *diagnosis) explainServerChainError(err error) *Report {
	var ce x509.CertificateInvalidError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	switch {
	case errors.As(err, &ce) && ce.Reason == x509.Expired:
		return d.serverValidity(ce.Cert)
	case errors.As(err, &ce) && ce.Reason == x509.CANotAuthorizedForThisName:
		return d.nameConstraints(ce)
	case errors.As(err, &ce) && ce.Reason == x509.IncompatibleUsage:
		d.r.step("server chain", false, "the server's certificate is not valid for server authentication (extended key usage: %v)", d.chain[0].ExtKeyUsage)
		return d.r.verdict(ServerWrongUsage, "the server's certificate lacks the serverAuth extended key usage", "issue the server a certificate with serverAuth (every mutual certificate has it)")
	case errors.As(err, &ua) || strings.Contains(err.Error(), "unknown authority"):
		return d.unknownAuthority()
	case errors.As(err, &he):
		return nil
	}
	d.r.step("server chain", false, "%v", err)
	return d.r.verdict(ServerUnknownCA, "the server's chain does not verify: "+err.Error(), "check the server's certificate and the trusted roots")
}

// nameConstraints: an intermediate issued a certificate outside the names
// it is constrained to.
func (d *diagnosis) nameConstraints(ce x509.CertificateInvalidError) *Report {
	leaf := d.chain[0]
	ca := ce.Cert
	for _, c := range d.chain[1:] {
		if ca == leaf && leaf.CheckSignatureFrom(c) == nil {
			ca = c
		}
	}
	d.r.step("server chain", false, "%q is constrained to %s, but issued %s (%s)", ca.Subject.String(), constraintsOf(ca), namesOf(leaf), ce.Detail)
	return d.r.verdict(NameConstraints, fmt.Sprintf("the server's certificate names %s, outside what its issuing CA %q may certify (%s)", namesOf(leaf), ca.Subject.String(), constraintsOf(ca)),
		"issue the server's certificate from a CA of its own trust domain (each mutual intermediate may only certify spiffe://<its trust domain>/...), or connect to the right server")
}

func constraintsOf(ca *x509.Certificate) string {
	var n []string
	n = append(n, ca.PermittedURIDomains...)
	n = append(n, ca.PermittedDNSDomains...)
	for _, ip := range ca.PermittedIPRanges {
		n = append(n, ip.String())
	}
	if len(n) == 0 {
		return "names it excludes"
	}
	return "permitted: " + strings.Join(n, ", ")
}

// serverValidity explains an expired or not yet valid certificate of the
// server's chain: the leaf or an intermediate, skew or issuance.
func (d *diagnosis) serverValidity(c *x509.Certificate) *Report {
	r, now := d.r, d.o.Now()
	what := "the server's certificate"
	if c != d.chain[0] {
		what = "the intermediate"
	}
	if now.Before(c.NotBefore) {
		return d.notYetValid(c, what)
	}
	ago := now.Sub(c.NotAfter).Round(time.Second)
	r.step("server chain", false, "%s %q expired at %s (%s ago)", what, c.Subject.String(), c.NotAfter.UTC().Format(time.RFC3339), ago)
	if c != d.chain[0] {
		return r.verdict(IntermediateExpired, fmt.Sprintf("the intermediate %q the server sends expired %s ago, while its own certificate %s is still valid", c.Subject.String(), ago, describeLeaf(d.chain[0])),
			"rotate the intermediate (mutual ca rotate, or reissue it from the root) and reissue the server's certificate under the new one; or, if the CA already did, serve the new chain (cert.pem) instead of the old intermediate")
	}
	fix := "renew the server's certificate (mutual cert renew, or let the agent renew it) and make sure the server reloads it"
	if now.Sub(c.NotAfter) < 10*time.Minute {
		fix += "; if it should still be valid, check this machine's clock"
	}
	return r.verdict(ServerExpired, fmt.Sprintf("the server's certificate %q expired %s ago", c.Subject.String(), ago), fix)
}

// notYetValid tells clock skew from a certificate issued for later: the
// server's HTTP Date header says what time the server thinks it is.
func (d *diagnosis) notYetValid(c *x509.Certificate, what string) *Report {
	r, now := d.r, d.o.Now()
	skew := c.NotBefore.Sub(now).Round(time.Second)
	r.step("server chain", false, "%s %q is not valid before %s (%s from now)", what, c.Subject.String(), c.NotBefore.UTC().Format(time.RFC3339), skew)
	if d.p.http != nil && !d.p.http.date.IsZero() {
		server := d.p.http.date
		ahead := server.Sub(now).Round(time.Second)
		if !server.Before(c.NotBefore) {
			r.step("clock", false, "the server's Date header says %s, %s ahead of this machine (%s)", server.UTC().Format(time.RFC3339), ahead, now.UTC().Format(time.RFC3339))
			return r.verdict(ClockSkew, fmt.Sprintf("this machine's clock is about %s behind the server's: the certificate (valid from %s) is already valid by the server's clock (its Date header) and the CA's", ahead, c.NotBefore.UTC().Format(time.RFC3339)),
				"set this machine's clock right (enable NTP: timedatectl set-ntp true, or chronyc makestep)")
		}
		r.step("clock", true, "the server's Date header (%s) agrees with this machine's clock", server.UTC().Format(time.RFC3339))
		return r.verdict(ServerNotYetValid, fmt.Sprintf("%s %q is valid only from %s, also by the server's own clock: it was issued for later, or by a CA whose clock is %s ahead", what, c.Subject.String(), c.NotBefore.UTC().Format(time.RFC3339), skew),
			"check the CA's clock (date -u on the CA host) and reissue the certificate; mutual back-dates certificates by one minute for small skews")
	}
	return r.verdict(ServerNotYetValid, fmt.Sprintf("%s %q is not valid yet (from %s): a clock is wrong by about %s, or it was issued for later", what, c.Subject.String(), c.NotBefore.UTC().Format(time.RFC3339), skew),
		fmt.Sprintf("a clock is wrong by about %s: check NTP on this machine and on the CA (mutual back-dates certificates by one minute for small skews); the server sent no HTTP Date header to tell which clock", skew))
}

// unknownAuthority names why the chain does not reach a trusted root: a
// missing intermediate, a root of the same name rotated on one side, a
// foreign trust domain, a bundle without the root of its own domain.
func (d *diagnosis) unknownAuthority() *Report {
	r, o, chain := d.r, d.o, d.chain
	leaf := chain[0]
	top := chain[len(chain)-1]
	if len(chain) == 1 && !isSelfSigned(leaf) {
		for _, c := range o.ClientChain {
			if c.IsCA && leaf.CheckSignatureFrom(c) == nil {
				r.step("server chain", false, "the server sent its certificate alone; its issuer %q is an intermediate it did not send", leaf.Issuer.String())
				return r.verdict(MissingIntermediate, "the server does not send its intermediate certificate, so clients cannot build a chain to the root",
					"serve the full chain (leaf then intermediate): mutual writes it in cert.pem; for nginx use ssl_certificate with the whole file")
			}
		}
		if d.rootNamed(leaf.RawIssuer) == nil {
			r.step("server chain", false, "the server sent only its own certificate, issued by %q, which the trusted roots do not include", leaf.Issuer.String())
			return r.verdict(MissingIntermediate, fmt.Sprintf("the server sends no intermediate, and its issuer %q is not a trusted root", leaf.Issuer.String()),
				"serve the full chain (leaf then intermediate), or if this is another CA, add its root to the bundle")
		}
	}
	if root := d.rootNamed(top.RawIssuer); root != nil && top.CheckSignatureFrom(root) != nil {
		r.step("server chain", false, "the bundle has a root named %q, but it did not sign the server's chain: another key of the same name", root.Subject.String())
		return r.verdict(RootRotated, fmt.Sprintf("the root %q was rotated on one side only: the server's chain is signed by a root of that name whose key differs from the one in this client's bundle", root.Subject.String()),
			"distribute the current bundle to both sides (mutual bundle show > bundle.pem, or let the agent do it); during a rotation, trust the old and the new root together")
	}
	serverTD, sok := trustDomainOf(leaf)
	clientTD, cok := d.clientTrustDomain()
	switch {
	case sok && cok && serverTD != clientTD:
		r.step("server chain", false, "the server belongs to %s; this client (%s) trusts no root of it", serverTD, clientTD)
		return r.verdict(ForeignTrustDomain, fmt.Sprintf("the server is of trust domain %s, this client of %s, and the client's bundle holds no root of %s", serverTD, clientTD, serverTD),
			fmt.Sprintf("federate the two domains (mutual federation add %s with its bundle endpoint) so the client trusts %s's root, or connect to a server of %s", serverTD, serverTD, clientTD))
	case sok && cok:
		r.step("server chain", false, "the server is of this client's own trust domain %s, but the bundle does not hold the root %q", serverTD, top.Issuer.String())
		return r.verdict(BundleMissingRoot, fmt.Sprintf("the client's bundle lacks the root of its own trust domain %s (%q), which the server's chain ends at", serverTD, top.Issuer.String()),
			"refresh the bundle: write the CA's bundle.pem (mutual bundle show) over the one given with --bundle or in the identity directory")
	}
	r.step("server chain", false, "the chain ends at %q, which the trusted roots do not include", top.Issuer.String())
	return r.verdict(ServerUnknownCA, fmt.Sprintf("the server's certificate is issued by a CA this client does not trust (%q)", top.Issuer.String())+d.sniHint(),
		"use the bundle of the server's trust domain (--bundle or the identity directory's bundle.pem), or get the server a certificate from your CA")
}

// sniHint says, when no server name was sent, that the certificate seen
// may be a default one.
func (d *diagnosis) sniHint() string {
	if net.ParseIP(d.o.ServerName) == nil {
		return ""
	}
	return fmt.Sprintf("; no server name (SNI) was sent, since %s is an address: if the server picks its certificate by name, rerun with --server-name NAME to tell that apart", d.o.ServerName)
}

func (d *diagnosis) rootNamed(rawName []byte) *x509.Certificate {
	for _, c := range d.o.Roots {
		if bytes.Equal(c.RawSubject, rawName) {
			return c
		}
	}
	return nil
}

// clientTrustDomain is the client's trust domain: its certificate's, or the
// one --expect names.
func (d *diagnosis) clientTrustDomain() (spiffeid.TrustDomain, bool) {
	if len(d.o.ClientChain) > 0 {
		if td, ok := trustDomainOf(d.o.ClientChain[0]); ok {
			return td, true
		}
	}
	for _, c := range d.o.Roots {
		if td, ok := trustDomainOf(c); ok {
			return td, true
		}
	}
	return spiffeid.TrustDomain{}, false
}

func trustDomainOf(c *x509.Certificate) (spiffeid.TrustDomain, bool) {
	for _, u := range c.URIs {
		if id, err := spiffeid.FromURI(u); err == nil {
			return id.TrustDomain(), true
		}
	}
	return spiffeid.TrustDomain{}, false
}

// checkServerName checks the name, separately so that a chain problem is
// reported first. SPIFFE clients (mutual proxy outbound, tlsconfig,
// go-spiffe) do not check it: the SPIFFE ID authenticates the server. It
// is a failure only when asked for (--server-name) or when no --expect
// says which SPIFFE ID the server must have, as for curl and browsers.
func (d *diagnosis) checkServerName() *Report {
	r, o, leaf := d.r, d.o, d.chain[0]
	if err := leaf.VerifyHostname(o.ServerName); err == nil {
		r.step("server chain", true, "verifies to a trusted root, valid for %q", o.ServerName)
		return nil
	}
	if o.nameOptional {
		r.step("server chain", true, "verifies to a trusted root")
		r.step("server name", true, "the certificate does not name %q (%s): not needed, SPIFFE clients such as mutual proxy outbound authenticate the server by its SPIFFE ID (--expect); clients that check host names (curl, browsers, --server-name) would refuse it",
			o.ServerName, hostNamesOf(leaf))
		return nil
	}
	r.step("server chain", false, "the certificate is for %s, not %q", namesOf(leaf), o.ServerName)
	fix := "connect by a name the certificate carries (--server-name), or reissue it with that name (mutual token create --dns NAME / --ip IP) for clients that check host names (curl, browsers)"
	if o.Expect == nil {
		fix += "; mutual proxy outbound and tlsconfig clients need no name: they authenticate the server by its SPIFFE ID, so diagnose with --expect SPIFFE-ID to check what they check"
	} else {
		fix += "; or drop --server-name: with --expect, mutual proxy outbound and tlsconfig clients authenticate the server by its SPIFFE ID alone"
	}
	return r.verdict(NameMismatch, fmt.Sprintf("the server's certificate does not name %q (%s)", o.ServerName, hostNamesOf(leaf)), fix)
}

func (d *diagnosis) checkServerID() *Report {
	r, o, leaf := d.r, d.o, d.chain[0]
	if o.Expect == nil {
		return nil
	}
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
	return nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
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
