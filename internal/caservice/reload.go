package caservice

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/revocation/publish"
	"github.com/mutual-tls/mutual/internal/server"
	"github.com/mutual-tls/mutual/internal/watch"
)

// liveOCSP is the OCSP responders of the intermediates this service
// answers for, swapped by a reload while requests are served.
type liveOCSP struct {
	rs atomic.Pointer[publish.Responders]
}

func (l *liveOCSP) load() publish.Responders { return *l.rs.Load() }

// Respond answers reqDER with the responder of the issuer it names.
func (l *liveOCSP) Respond(ctx context.Context, reqDER []byte) []byte {
	return l.load().Respond(ctx, reqDER)
}

// caFingerprint is what a rotation changes on disk: ca.json, the
// intermediate's and the cross-signed certificates. Reading them is cheap;
// loading the CA (key files, token sessions) happens only when it moved.
func caFingerprint(dir string) ([32]byte, error) {
	h := sha256.New()
	for _, name := range []string{pki.ConfigFile, pki.IntermediateCertFile, pki.CrossSignedFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil && !(errors.Is(err, os.ErrNotExist) && name == pki.CrossSignedFile) {
			return [32]byte{}, fmt.Errorf("read the CA directory: %w", err)
		}
		fmt.Fprintf(h, "%s %d\n", name, len(b))
		h.Write(b)
	}
	return [32]byte(h.Sum(nil)), nil
}

// watchCA follows the CA directory: a rotation (ca.json and the
// intermediate changed) is picked up within interval, or at once when
// trigger fires (SIGHUP). A failed reload leaves the running intermediate
// in force and is logged.
func (s *Service) watchCA(ctx context.Context) error {
	last := "" // a failure is logged once, not at every poll
	return watch.Loop{
		Reload:   s.Reload,
		Interval: s.reloadInterval,
		Now:      s.reloadTrigger,
		OnChange: func() { last = "" },
		OnError: func(err error) {
			if err.Error() == last {
				return
			}
			last = err.Error()
			s.log.Error("CA directory changed but not reloaded; the service keeps issuing under its current intermediate", "dir", s.Dir, "error", err.Error())
		},
	}.Run(ctx)
}

// Reload picks up a rotation of the CA directory while the service runs:
// new issuance moves to the new intermediate, the retired ones keep their
// CRL and OCSP answers, clients holding a leaf of a retired intermediate
// still authenticate, and the service's TLS certificate is reissued under
// the new intermediate. Connections and requests in flight are untouched:
// the keys of the previous intermediates stay open until Close. It reports
// whether anything changed. A root rotation still needs a restart (the
// bundle is served from memory): Reload says so.
func (s *Service) Reload(ctx context.Context) (bool, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	fp, err := caFingerprint(s.Dir)
	if err != nil || fp == s.caPrint {
		return false, err
	}
	c, keys, err := loadCA(ctx, s.Dir, s.passphrase)
	if err != nil {
		return false, fmt.Errorf("reload the CA directory %s: %w", s.Dir, err)
	}
	if !slices.EqualFunc(c.Roots, s.caDir.Roots, (*x509.Certificate).Equal) {
		keys.Close()
		return false, fmt.Errorf("the CA directory %s now has another root bundle (a root rotation or withdrawal): restart the service so that it serves the new bundle", s.Dir)
	}
	if err := s.moveTo(ctx, c); err != nil {
		keys.Close()
		return false, err
	}
	s.oldKeys = append(s.oldKeys, s.keys)
	s.keys, s.caPrint = keys, fp
	s.log.Info("CA directory reloaded: issuing under the new intermediate", "intermediate", pki.FormatSerial(c.Issuer.Cert.SerialNumber),
		"retired", len(c.Retired), "cross_signed", len(s.Authority.CrossSigned))
	return true, nil
}

// moveTo makes the Authority, the OCSP responders, the HTTPS edge and the
// service's TLS certificate follow c.
func (s *Service) moveTo(ctx context.Context, c *pki.CA) error {
	next := &ca.Authority{}
	if err := rotationChains(next, c); err != nil {
		return err
	}
	responders := s.ocsp.load()
	if !c.Issuer.Cert.Equal(s.caDir.Issuer.Cert) {
		r, err := publish.NewKeyedResponder(c.Issuer, s.ocspKey, s.Store, nil)
		if err != nil {
			return fmt.Errorf("the OCSP responder of the new intermediate: %w", err)
		}
		responders = append(publish.Responders{r}, responders...)
	}
	crlURL := strings.TrimSuffix(s.crlBase, "/") + "/" + revocation.IssuerKeyID(c.Issuer.Cert) + ".crl"
	s.Authority.Rotate(c.Issuer, next.Retired, next.CrossSigned, crlURL)
	s.ocsp.rs.Store(&responders)
	s.Server.SetIssuer(server.Issuing{
		IssuerCert: c.Issuer.Cert, CRL: &publish.CRL{Issuer: c.Issuer, Store: s.Store},
		RetiredCRLs: retiredCRLs(c, s.Store), Intermediates: next.CrossSigned,
	})
	s.caDir = c
	// Issuance has moved: a failure here leaves the TLS certificate of the
	// retired intermediate served (still valid), retried hourly.
	if err := s.serverCert(ctx); err != nil {
		s.log.Error("CA service TLS certificate not reissued under the new intermediate", "error", err.Error())
	}
	return nil
}
