package revocation

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"golang.org/x/crypto/ocsp"
)

// Stapler keeps a current OCSP response for the certificate a server
// presents, so that clients that ask (status_request) get it stapled.
type Stapler struct {
	Source Source
	Log    *slog.Logger

	mu     sync.RWMutex
	serial string
	resp   []byte
	next   time.Time
}

// Staple returns the response for leaf, or nil when none is held.
func (s *Stapler) Staple(leaf *x509.Certificate) []byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if leaf == nil || s.serial != fmt.Sprintf("%x", leaf.SerialNumber) {
		return nil
	}
	return s.resp
}

// Run refreshes the response at half its validity and whenever the
// certificate changes, until ctx is done.
func (s *Stapler) Run(ctx context.Context) error {
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		svid, err := s.Source.GetX509SVID()
		if err == nil && len(svid.Certificates) > 1 {
			leaf := svid.Certificates[0]
			s.mu.RLock()
			due := s.serial != fmt.Sprintf("%x", leaf.SerialNumber) || time.Now().After(s.next)
			s.mu.RUnlock()
			if due && len(leaf.OCSPServer) > 0 {
				if err := s.refresh(ctx, leaf, svid.Certificates[1]); err != nil {
					s.Log.Warn("OCSP staple: cannot refresh", "serial", fmt.Sprintf("%x", leaf.SerialNumber), "error", err.Error())
					s.mu.Lock()
					s.next = time.Now().Add(30 * time.Second)
					s.mu.Unlock()
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *Stapler) refresh(ctx context.Context, leaf, issuer *x509.Certificate) error {
	req, err := ocsp.CreateRequest(leaf, issuer, nil)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	hr, _ := http.NewRequestWithContext(cctx, http.MethodPost, leaf.OCSPServer[0], bytes.NewReader(req))
	hr.Header.Set("Content-Type", "application/ocsp-request")
	// Plain HTTP or HTTPS to the CA: the response is signed, and verified
	// below against the issuer.
	hc, err := caClient(s.Source, leaf.OCSPServer[0])
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(hr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	der, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return err
	}
	parsed, err := ocsp.ParseResponseForCert(der, leaf, issuer)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.serial, s.resp = fmt.Sprintf("%x", leaf.SerialNumber), der
	s.next = parsed.ThisUpdate.Add(parsed.NextUpdate.Sub(parsed.ThisUpdate) / 2)
	s.mu.Unlock()
	return nil
}
