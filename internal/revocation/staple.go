package revocation

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/internal/pki"
)

// Stapler keeps a current OCSP response for the certificate a server
// presents, so that clients that ask (status_request) get it stapled.
//
// It never staples "good" for a certificate known to be revoked: Revoke
// drops a held "good" response at once and fetches a fresh one, and a
// "good" response produced before the revocation (stale, or replayed) is
// refused.
type Stapler struct {
	Source Source
	// Revoked, if set, reports whether a serial (lower-case hex) is known
	// to be revoked (the revocation watcher's Revoked); a "good" response
	// is neither stapled nor fetched for such a serial.
	Revoked func(serial string) bool
	Log     *slog.Logger

	mu         sync.RWMutex
	serial     string
	resp       []byte
	status     int
	thisUpdate time.Time
	next       time.Time
	// revokedAt is when the held serial was revoked, from Revoke.
	revokedAt time.Time

	wakeOnce sync.Once
	wake     chan struct{}
}

// errGoodForRevoked is a "good" answer for a certificate known revoked.
var errGoodForRevoked = errors.New(`the OCSP responder says "good" for a certificate known to be revoked (a stale or replayed response); not stapled`)

func (s *Stapler) wakeCh() chan struct{} {
	s.wakeOnce.Do(func() { s.wake = make(chan struct{}, 1) })
	return s.wake
}

func (s *Stapler) poke() {
	select {
	case s.wakeCh() <- struct{}{}:
	default:
	}
}

// Staple returns the response for leaf, or nil when none is held.
func (s *Stapler) Staple(leaf *x509.Certificate) []byte {
	if leaf == nil {
		return nil
	}
	serial := pki.FormatSerial(leaf.SerialNumber)
	s.mu.RLock()
	held, resp, status := s.serial, s.resp, s.status
	s.mu.RUnlock()
	if held != serial || resp == nil {
		return nil
	}
	if status == ocsp.Good && s.Revoked != nil && s.Revoked(serial) {
		s.poke()
		return nil
	}
	return resp
}

// Revoke is the revocation hook: when e names the presented certificate,
// a held "good" response is dropped at once and a fresh one is fetched.
func (s *Stapler) Revoke(e Event) {
	s.mu.Lock()
	if e.Serial == "" || e.Serial != s.serial {
		s.mu.Unlock()
		return
	}
	at := e.RevokedAt
	if at.IsZero() {
		at = time.Now()
	}
	s.revokedAt = at
	if s.status == ocsp.Good {
		s.resp = nil
	}
	s.next = time.Time{}
	s.mu.Unlock()
	if s.Log != nil {
		s.Log.Error("this proxy's own certificate is revoked: its OCSP staple is withdrawn; renew it", "serial", e.Serial)
	}
	s.poke()
}

// Run refreshes the response at half its validity, whenever the
// certificate changes and at once after Revoke, until ctx is done.
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
			due := s.serial != pki.FormatSerial(leaf.SerialNumber) || time.Now().After(s.next)
			s.mu.RUnlock()
			if due && len(leaf.OCSPServer) > 0 {
				if err := s.refresh(ctx, leaf, svid.Certificates[1]); err != nil {
					s.Log.Warn("OCSP staple: cannot refresh", "serial", pki.FormatSerial(leaf.SerialNumber), "error", err.Error())
					retry := 30 * time.Second
					if errors.Is(err, errGoodForRevoked) {
						retry = time.Second
					}
					s.mu.Lock()
					s.next = time.Now().Add(retry)
					s.mu.Unlock()
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.wakeCh():
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
	serial := pki.FormatSerial(leaf.SerialNumber)
	if parsed.Status == ocsp.Good && s.Revoked != nil && s.Revoked(serial) {
		return errGoodForRevoked
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.serial == serial {
		if parsed.Status == ocsp.Good && !s.revokedAt.IsZero() && !parsed.ProducedAt.After(s.revokedAt) {
			return fmt.Errorf("%w: produced %s, revoked %s", errGoodForRevoked, parsed.ProducedAt.UTC().Format(time.RFC3339), s.revokedAt.UTC().Format(time.RFC3339))
		}
		if parsed.ThisUpdate.Before(s.thisUpdate) {
			return fmt.Errorf("the OCSP responder answered with a response older (thisUpdate %s) than the one held; not stapled", parsed.ThisUpdate.UTC().Format(time.RFC3339))
		}
	} else {
		s.revokedAt, s.thisUpdate = time.Time{}, time.Time{}
	}
	s.serial, s.resp, s.status, s.thisUpdate = serial, der, parsed.Status, parsed.ThisUpdate
	s.next = parsed.ThisUpdate.Add(parsed.NextUpdate.Sub(parsed.ThisUpdate) / 2)
	return nil
}
