package diagnose

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/mutual-tls/mutual/internal/pki"
)

// certificateRequest reports whether and from which CAs the server asks
// for a client certificate.
func (d *diagnosis) certificateRequest(context.Context) *Report {
	r, p := d.r, d.p
	if !p.requested {
		r.step("certificate request", true, "the server does not ask for a client certificate")
		return nil
	}
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
	return nil
}

// clientCertificate examines the client identity against what the server
// asked.
func (d *diagnosis) clientCertificate(ctx context.Context) *Report {
	if len(d.o.ClientChain) == 0 {
		p := d.p
		if p.requested {
			d.r.step("client certificate", false, "none given")
			if p.postAlert != nil || p.closedEarly {
				return d.clientCertRequired()
			}
		}
		return nil
	}
	return d.checkClient(ctx)
}

// checkClient finds what is wrong with the client identity itself, and
// with it against the CA names the server accepts.
func (d *diagnosis) checkClient(ctx context.Context) *Report {
	if v := d.localClient(); v != nil {
		return v
	}
	r, o, p := d.r, d.o, d.p
	leaf := o.ClientChain[0]
	if p.requested && len(p.acceptable) > 0 && !d.acceptedCA() {
		if lone(o.ClientChain) {
			return d.clientMissingIntermediate()
		}
		r.step("client certificate", false, "issued under %q, which is not among the CAs the server accepts", topIssuer(o.ClientChain))
		return r.verdict(ClientCANotAccepted, fmt.Sprintf("the client certificate comes from a CA the server does not accept (it accepts: %s; the client's chain ends at %q)", strings.Join(r.AcceptableCAs, "; "), topIssuer(o.ClientChain)),
			"use an identity from a CA the server trusts, or add this CA's root to the server's client CA bundle")
	}
	if !o.SkipRevocation && len(o.ClientChain) > 1 {
		s := d.revocation(ctx, leaf, o.ClientChain[1], nil)
		switch {
		case s.revoked != "":
			r.step("client revocation", false, "%s", s.revoked)
			return r.verdict(ClientCertRevoked, fmt.Sprintf("the client certificate %s (serial %s) is revoked: %s", describeLeaf(leaf), pki.FormatSerial(leaf.SerialNumber), s.revoked),
				"get a new identity: enroll again with a new join token (a revoked certificate cannot renew)")
		case s.unavailable():
			r.step("client revocation", true, "not known: %s", strings.Join(s.problems, "; "))
			d.clientRevocationDown = s.problems
		case len(s.good) > 0:
			r.step("client revocation", true, "%s", strings.Join(s.good, "; "))
			d.clientRevocationGood = true
		}
	}
	r.step("client certificate", true, "%s, valid, clientAuth, %s", describeLeaf(leaf), pki.KeyDescription(leaf.PublicKey))
	return nil
}

// localClient finds what is wrong with the client identity on its own:
// the key, the validity, the usage, the chain's order.
func (d *diagnosis) localClient() *Report {
	r, o := d.r, d.o
	leaf := o.ClientChain[0]
	now := o.Now()
	if o.ClientKey != nil {
		if pub, ok := publicOf(o.ClientKey); !ok || !pki.PublicKeysEqual(leaf.PublicKey, pub) {
			keyType := "not a signing key"
			if ok {
				keyType = pki.KeyDescription(pub)
			}
			r.step("client certificate", false, "the private key (%s) does not belong to the certificate (%s)", keyType, pki.KeyDescription(leaf.PublicKey))
			return r.verdict(KeyMismatch, fmt.Sprintf("the client's private key does not match its certificate (the key is %s, the certificate's is %s): the server refuses the handshake, the signature does not verify", keyType, pki.KeyDescription(leaf.PublicKey)),
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
	for _, c := range o.ClientChain[1:] {
		if now.After(c.NotAfter) {
			r.step("client certificate", false, "its intermediate %q expired at %s", c.Subject.String(), c.NotAfter.UTC().Format(time.RFC3339))
			return r.verdict(IntermediateExpired, fmt.Sprintf("the intermediate %q in the client's certificate file expired at %s, while the client certificate is still valid", c.Subject.String(), c.NotAfter.UTC().Format(time.RFC3339)),
				"rotate the intermediate and reissue the client's certificate under the new one, or, if the CA already did, use the new chain (cert.pem)")
		}
	}
	if !hasEKU(leaf, x509.ExtKeyUsageClientAuth) {
		r.step("client certificate", false, "%s lacks the clientAuth extended key usage (it has %v)", describeLeaf(leaf), leaf.ExtKeyUsage)
		return r.verdict(ClientWrongUsage, "the client certificate is not valid for client authentication (no clientAuth extended key usage)",
			"use a certificate with clientAuth: every certificate mutual issues has it")
	}
	if len(o.ClientChain) > 1 && leaf.CheckSignatureFrom(o.ClientChain[1]) != nil {
		r.step("client certificate", false, "the second certificate of the file, %q, did not sign the first", o.ClientChain[1].Subject.String())
		return r.verdict(ChainMisordered, fmt.Sprintf("the client's certificate file is out of order or holds unrelated certificates: %q, second, is not the issuer of %s", o.ClientChain[1].Subject.String(), describeLeaf(leaf)),
			"write the client's certificate file as the leaf then its intermediate (mutual's cert.pem is in that order)")
	}
	return nil
}

// acceptedCA: a certificate of the client's chain is issued by, or is, a
// CA the server listed.
func (d *diagnosis) acceptedCA() bool {
	issuers := map[string]bool{}
	for _, c := range d.o.ClientChain {
		issuers[string(c.RawIssuer)] = true
		issuers[string(c.RawSubject)] = true
	}
	for _, a := range d.p.acceptable {
		if issuers[string(a)] {
			return true
		}
	}
	return false
}

func lone(chain []*x509.Certificate) bool { return len(chain) == 1 && !isSelfSigned(chain[0]) }

func (d *diagnosis) clientMissingIntermediate() *Report {
	leaf := d.o.ClientChain[0]
	d.r.step("client certificate", false, "the certificate file holds %s alone; its issuer %q is an intermediate that is not sent", describeLeaf(leaf), leaf.Issuer.String())
	return d.r.verdict(ClientMissingIntermediate, fmt.Sprintf("the client sends its certificate without its intermediate %q, so the server cannot link it to a root it trusts", leaf.Issuer.String()),
		"send the full chain: use cert.pem as mutual writes it (leaf then intermediate), or append the intermediate to the certificate file (openssl s_client needs -cert_chain); the CA itself is fine")
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

func (d *diagnosis) clientCertRequired() *Report {
	what := "none was given"
	if len(d.o.ClientChain) > 0 && d.o.ClientKey == nil {
		what = "a certificate was given without its private key"
	}
	return d.r.verdict(ClientCertRequired, "the server requires a client certificate and "+what,
		"pass the client identity: --identity-dir DIR (or --cert, --key and --bundle)")
}
