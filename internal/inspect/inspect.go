// Package inspect explains certificates in words a person reads: who they
// name, who issued them, how long they last, what they may be used for, and
// whether a chain verifies and a key matches.
package inspect

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/tlsprobe"
)

// Certificate describes one certificate.
type Certificate struct {
	Role                string    `json:"role"`
	Subject             string    `json:"subject"`
	Issuer              string    `json:"issuer"`
	SPIFFEID            string    `json:"spiffe_id,omitempty"`
	DNSNames            []string  `json:"dns_names,omitempty"`
	IPAddresses         []string  `json:"ip_addresses,omitempty"`
	Serial              string    `json:"serial"`
	NotBefore           time.Time `json:"not_before"`
	NotAfter            time.Time `json:"not_after"`
	Validity            string    `json:"validity"`
	Key                 string    `json:"key"`
	KeyUsage            []string  `json:"key_usage,omitempty"`
	ExtKeyUsage         []string  `json:"ext_key_usage,omitempty"`
	IsCA                bool      `json:"is_ca"`
	MaxPathLen          *int      `json:"max_path_len,omitempty"`
	PermittedURIDomains []string  `json:"permitted_uri_domains,omitempty"`
	SubjectKeyID        string    `json:"subject_key_id,omitempty"`
	AuthorityKeyID      string    `json:"authority_key_id,omitempty"`
	CRL                 []string  `json:"crl,omitempty"`
	OCSP                []string  `json:"ocsp,omitempty"`
	SHA256              string    `json:"sha256"`
}

// Report is what inspect found in a file or an identity directory.
type Report struct {
	Source       string        `json:"source"`
	Certificates []Certificate `json:"certificates"`
	// KeyMatches is set when a private key was found beside the certificate.
	KeyMatches *bool `json:"key_matches,omitempty"`
	// Verified is set when a bundle was available to verify the chain against.
	Verified    *bool    `json:"verified,omitempty"`
	VerifyError string   `json:"verify_error,omitempty"`
	Problems    []string `json:"problems,omitempty"`
}

// Remote inspects the chain a TLS server at addr (HOST:PORT) presents. No
// verification is skipped: the handshake is made with no trusted roots, and
// the chain is read from the verification error it ends with. bundle, if
// given, is then used to verify the chain for the host name.
func Remote(ctx context.Context, addr, bundle string, now time.Time) (*Report, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%q is not a file, a directory or HOST:PORT", addr)
	}
	chain, err := tlsprobe.Chain(ctx, nil, addr, &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, fmt.Errorf("%s: %w (mutual diagnose %s explains connection failures)", addr, err, addr)
	}
	r := &Report{Source: addr, Certificates: Describe(chain, now)}
	if bundle != "" {
		roots, err := pki.ReadCertificates(bundle)
		if err != nil {
			return nil, err
		}
		verr := chain[0].VerifyHostname(host)
		if verr == nil {
			_, verr = pki.VerifyChain(chain, roots, now)
		}
		ok := verr == nil
		r.Verified = &ok
		if verr != nil {
			r.VerifyError = verr.Error()
			r.Problems = append(r.Problems, "the chain does not verify against the bundle for "+host+": "+verr.Error())
		}
	}
	return r, nil
}

// Path inspects a PEM file or an identity directory. bundle, if not empty,
// names a PEM file of roots to verify against (an identity directory's own
// bundle.pem is used otherwise).
func Path(path, bundle string, now time.Time) (*Report, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	r := &Report{Source: path}
	var chain []*x509.Certificate
	if st.IsDir() {
		chain, err = pki.ReadCertificates(filepath.Join(path, identity.CertFile))
		if err != nil {
			return nil, err
		}
		if bundle == "" {
			bundle = filepath.Join(path, identity.BundleFile)
		}
		if keyPEM, err := os.ReadFile(filepath.Join(path, identity.KeyFile)); err == nil {
			key, err := pki.ParsePrivateKey(keyPEM, nil)
			m := err == nil && pki.PublicKeysEqual(chain[0].PublicKey, key.Public())
			r.KeyMatches = &m
			if err != nil {
				r.Problems = append(r.Problems, fmt.Sprintf("%s cannot be read: %v", identity.KeyFile, err))
			} else if !m {
				r.Problems = append(r.Problems, fmt.Sprintf("%s does not belong to the certificate in %s", identity.KeyFile, identity.CertFile))
			}
		}
	} else {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		chain, err = pki.ParseCertificates(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	var roots []*x509.Certificate
	if bundle != "" {
		if roots, err = pki.ReadCertificates(bundle); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	r.Certificates = Describe(chain, now)
	if len(roots) > 0 {
		ok, verr := verify(chain, roots, now)
		r.Verified = &ok
		if verr != nil {
			r.VerifyError = verr.Error()
			r.Problems = append(r.Problems, "the chain does not verify against the bundle: "+verr.Error())
		}
	}
	for _, c := range r.Certificates {
		if now.After(c.NotAfter) {
			r.Problems = append(r.Problems, fmt.Sprintf("%s certificate %s expired %s", c.Role, c.Serial, strings.TrimPrefix(c.Validity, "expired ")))
		}
	}
	return r, nil
}

func verify(chain, roots []*x509.Certificate, now time.Time) (bool, error) {
	_, err := pki.VerifyChain(chain, roots, now, x509.ExtKeyUsageAny)
	return err == nil, err
}

// Describe turns a chain (leaf first) into descriptions.
func Describe(chain []*x509.Certificate, now time.Time) []Certificate {
	out := make([]Certificate, 0, len(chain))
	for i, c := range chain {
		d := Certificate{
			Subject: c.Subject.String(), Issuer: c.Issuer.String(),
			DNSNames: c.DNSNames, Serial: pki.FormatSerial(c.SerialNumber),
			NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(), Validity: validity(c, now),
			Key: pki.KeyDescription(c.PublicKey), KeyUsage: keyUsage(c.KeyUsage), ExtKeyUsage: extKeyUsage(c.ExtKeyUsage),
			IsCA: c.IsCA, PermittedURIDomains: c.PermittedURIDomains, CRL: c.CRLDistributionPoints, OCSP: c.OCSPServer,
		}
		sum := sha256.Sum256(c.Raw)
		d.SHA256 = hex.EncodeToString(sum[:])
		d.SubjectKeyID = hex.EncodeToString(c.SubjectKeyId)
		d.AuthorityKeyID = hex.EncodeToString(c.AuthorityKeyId)
		switch {
		case c.IsCA && c.CheckSignatureFrom(c) == nil:
			d.Role = "root"
		case c.IsCA:
			d.Role = "intermediate"
		case i == 0:
			d.Role = "leaf"
		default:
			d.Role = "certificate"
		}
		if c.IsCA && c.BasicConstraintsValid && (c.MaxPathLen > 0 || c.MaxPathLenZero) {
			n := c.MaxPathLen
			d.MaxPathLen = &n
		}
		if id, err := x509svid.IDFromCert(c); err == nil {
			d.SPIFFEID = id.String()
		}
		for _, ip := range c.IPAddresses {
			d.IPAddresses = append(d.IPAddresses, ip.String())
		}
		out = append(out, d)
	}
	return out
}

func validity(c *x509.Certificate, now time.Time) string {
	switch {
	case now.Before(c.NotBefore):
		return "not valid for another " + human(c.NotBefore.Sub(now)) + " (check this machine's clock)"
	case now.After(c.NotAfter):
		return "expired " + human(now.Sub(c.NotAfter)) + " ago"
	}
	return "valid, expires in " + human(c.NotAfter.Sub(now))
}

func human(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	case d < 2*365*24*time.Hour:
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	}
	return fmt.Sprintf("%.1f years", d.Hours()/24/365)
}

func keyUsage(k x509.KeyUsage) []string {
	names := []string{"digitalSignature", "contentCommitment", "keyEncipherment", "dataEncipherment", "keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly"}
	var out []string
	for i, n := range names {
		if k&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

func extKeyUsage(eku []x509.ExtKeyUsage) []string {
	var out []string
	for _, u := range eku {
		switch u {
		case x509.ExtKeyUsageServerAuth:
			out = append(out, "serverAuth")
		case x509.ExtKeyUsageClientAuth:
			out = append(out, "clientAuth")
		case x509.ExtKeyUsageAny:
			out = append(out, "any")
		case x509.ExtKeyUsageCodeSigning:
			out = append(out, "codeSigning")
		case x509.ExtKeyUsageEmailProtection:
			out = append(out, "emailProtection")
		case x509.ExtKeyUsageOCSPSigning:
			out = append(out, "OCSPSigning")
		default:
			out = append(out, fmt.Sprintf("eku(%d)", u))
		}
	}
	return out
}

// WriteText prints the report for people.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "%s\n", r.Source)
	for i, c := range r.Certificates {
		fmt.Fprintf(w, "\n[%d] %s\n", i, c.Role)
		line := func(k, v string) {
			if v != "" {
				fmt.Fprintf(w, "    %-13s %s\n", k, v)
			}
		}
		line("SPIFFE ID", c.SPIFFEID)
		line("DNS names", strings.Join(c.DNSNames, ", "))
		line("IP addresses", strings.Join(c.IPAddresses, ", "))
		line("subject", c.Subject)
		line("issuer", c.Issuer)
		line("validity", c.Validity)
		line("not before", c.NotBefore.Format(time.RFC3339))
		line("not after", c.NotAfter.Format(time.RFC3339))
		line("key", c.Key)
		line("key usage", strings.Join(c.KeyUsage, ", "))
		line("ext. usage", strings.Join(c.ExtKeyUsage, ", "))
		if c.IsCA {
			ca := "yes"
			if c.MaxPathLen != nil {
				ca += fmt.Sprintf(", path length %d", *c.MaxPathLen)
			}
			line("CA", ca)
		}
		if len(c.PermittedURIDomains) > 0 {
			line("constraints", "URIs only in "+strings.Join(c.PermittedURIDomains, ", "))
		}
		line("CRL", strings.Join(c.CRL, ", "))
		line("OCSP", strings.Join(c.OCSP, ", "))
		line("serial", c.Serial)
		line("key id", c.SubjectKeyID)
		line("issuer key id", c.AuthorityKeyID)
		line("SHA-256", c.SHA256)
	}
	fmt.Fprintln(w)
	if r.KeyMatches != nil {
		if *r.KeyMatches {
			fmt.Fprintln(w, "key:    key.pem matches the certificate")
		} else {
			fmt.Fprintln(w, "key:    key.pem does NOT match the certificate")
		}
	}
	if r.Verified != nil {
		if *r.Verified {
			fmt.Fprintln(w, "chain:  verifies against the bundle")
		} else {
			fmt.Fprintln(w, "chain:  does NOT verify against the bundle: "+r.VerifyError)
		}
	}
	for _, p := range r.Problems {
		fmt.Fprintln(w, "problem: "+p)
	}
}
