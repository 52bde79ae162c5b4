package diagnose

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/internal/pki"
)

// certStatus is what the revocation sources of one certificate say.
type certStatus struct {
	sources int // how many were asked (staple, OCSP URLs, CRL URLs)
	// revoked names the source that says revoked, with when and why.
	revoked string
	// good lists the sources that say good and are current.
	good []string
	// problems lists the sources that could not answer: down, stale,
	// unverifiable.
	problems []string
	// skew, when set, is evidence of a clock apart: an answer produced in
	// this machine's future.
	skew string
}

func (s *certStatus) unavailable() bool { return s.revoked == "" && len(s.problems) > 0 }

// revocation asks every source of leaf (issued by issuer): the stapled
// OCSP answer, the OCSP responders and the CRLs it names.
func (d *diagnosis) revocation(ctx context.Context, leaf, issuer *x509.Certificate, staple []byte) *certStatus {
	s := &certStatus{}
	if len(staple) > 0 {
		s.sources++
		d.ocspAnswer(s, "the stapled OCSP answer", staple, leaf, issuer)
	}
	for _, u := range leaf.OCSPServer {
		s.sources++
		der, err := d.askOCSP(ctx, u, leaf, issuer)
		if err != nil {
			s.problems = append(s.problems, fmt.Sprintf("the OCSP responder %s is unreachable: %v", u, err))
			continue
		}
		d.ocspAnswer(s, "the OCSP responder "+u, der, leaf, issuer)
	}
	for _, u := range leaf.CRLDistributionPoints {
		s.sources++
		d.crlAnswer(ctx, s, u, leaf, issuer)
	}
	return s
}

func (d *diagnosis) httpClient() *http.Client {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if d.o.Roots != nil {
		cfg.RootCAs = pki.CertPool(d.o.Roots)
	}
	return &http.Client{Timeout: d.o.Timeout, Transport: &http.Transport{TLSClientConfig: cfg}}
}

func (d *diagnosis) askOCSP(ctx context.Context, url string, leaf, issuer *x509.Certificate) ([]byte, error) {
	req, err := ocsp.CreateRequest(leaf, issuer, nil)
	if err != nil {
		return nil, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(req))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/ocsp-request")
	return d.fetch(hr)
}

func (d *diagnosis) fetch(hr *http.Request) ([]byte, error) {
	resp, err := d.httpClient().Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 16<<20))
}

func (d *diagnosis) ocspAnswer(s *certStatus, source string, der []byte, leaf, issuer *x509.Certificate) {
	now := d.o.Now()
	a, err := ocsp.ParseResponseForCert(der, leaf, issuer)
	switch {
	case err != nil:
		s.problems = append(s.problems, fmt.Sprintf("%s does not verify: %v", source, err))
		return
	case a.Status == ocsp.Revoked:
		s.revoked = fmt.Sprintf("%s says revoked since %s (reason %s)", source, a.RevokedAt.UTC().Format(time.RFC3339), reasonName(a.RevocationReason))
		return
	case a.ThisUpdate.After(now.Add(time.Minute)):
		s.skew = fmt.Sprintf("%s was produced at %s, %s in this machine's future", source, a.ThisUpdate.UTC().Format(time.RFC3339), a.ThisUpdate.Sub(now).Round(time.Second))
	case !a.NextUpdate.IsZero() && a.NextUpdate.Before(now):
		s.problems = append(s.problems, fmt.Sprintf("%s is stale: its next update was due %s", source, a.NextUpdate.UTC().Format(time.RFC3339)))
		return
	case a.Status == ocsp.Unknown:
		s.problems = append(s.problems, source+" does not know the certificate")
		return
	}
	s.good = append(s.good, source+" says good")
}

func (d *diagnosis) crlAnswer(ctx context.Context, s *certStatus, url string, leaf, issuer *x509.Certificate) {
	now := d.o.Now()
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		s.problems = append(s.problems, fmt.Sprintf("the CRL %s: %v", url, err))
		return
	}
	der, err := d.fetch(hr)
	if err != nil {
		s.problems = append(s.problems, fmt.Sprintf("the CRL %s is unreachable: %v", url, err))
		return
	}
	crl, err := x509.ParseRevocationList(der)
	if err == nil {
		err = crl.CheckSignatureFrom(issuer)
	}
	if err != nil {
		s.problems = append(s.problems, fmt.Sprintf("the CRL %s does not verify: %v", url, err))
		return
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
			s.revoked = fmt.Sprintf("the CRL %s lists it, revoked since %s (reason %s)", url, e.RevocationTime.UTC().Format(time.RFC3339), reasonName(e.ReasonCode))
			return
		}
	}
	if !crl.NextUpdate.IsZero() && crl.NextUpdate.Before(now) {
		s.problems = append(s.problems, fmt.Sprintf("the CRL %s is stale: its next update was due %s (%s ago)", url, crl.NextUpdate.UTC().Format(time.RFC3339), now.Sub(crl.NextUpdate).Round(time.Second)))
		return
	}
	s.good = append(s.good, fmt.Sprintf("the CRL %s (current until %s) does not list it", url, crl.NextUpdate.UTC().Format(time.RFC3339)))
}

var reasons = []string{"unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded", "cessationOfOperation", "certificateHold", "", "removeFromCRL", "privilegeWithdrawn", "aACompromise"}

func reasonName(code int) string {
	if code >= 0 && code < len(reasons) && reasons[code] != "" {
		return reasons[code]
	}
	return fmt.Sprint(code)
}

// serverRevocation checks the server certificate's revocation sources.
func (d *diagnosis) serverRevocation(ctx context.Context) *Report {
	if d.o.SkipRevocation || len(d.chain) < 2 {
		return nil
	}
	r, leaf := d.r, d.chain[0]
	s := d.revocation(ctx, leaf, d.chain[1], d.p.state.OCSPResponse)
	d.server = s
	switch {
	case s.sources == 0:
		r.step("server revocation", true, "the certificate names no CRL or OCSP responder and none is stapled: nothing to check")
	case s.revoked != "":
		r.step("server revocation", false, "%s", s.revoked)
		return r.verdict(ServerCertRevoked, fmt.Sprintf("the server's certificate %s (serial %s) is revoked: %s", describeLeaf(leaf), pki.FormatSerial(leaf.SerialNumber), s.revoked),
			"give the server a new certificate (mutual cert renew cannot renew a revoked one: enroll it again with a new join token) and make it reload; until then, clients that check revocation refuse it")
	case s.skew != "":
		r.step("server revocation", false, "%s", s.skew)
		return r.verdict(ClockSkew, "this machine's clock is behind the revocation responder's: "+s.skew, "set this machine's clock right (enable NTP), or the responder's if it is the one ahead")
	case s.unavailable():
		r.step("server revocation", false, "%s", strings.Join(s.problems, "; "))
		return r.verdict(RevocationUnavailable, fmt.Sprintf("the revocation status of the server's certificate cannot be known: %s. Clients that fail closed (openssl verify -crl_check, curl --cert-status, nginx with ssl_crl) refuse the server; clients that fail open or do not check (browsers, Go, curl by default) still connect", strings.Join(s.problems, "; ")),
			"bring the CA's CRL/OCSP service back (mutual server publishes both), and make sure the CRL is re-signed before its next update")
	default:
		r.step("server revocation", true, "%s", strings.Join(s.good, "; "))
	}
	return nil
}
