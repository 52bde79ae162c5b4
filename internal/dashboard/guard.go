package dashboard

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/internal/loopback"
	"github.com/mutual-tls/mutual/internal/pki"
)

// contentSecurityPolicy allows the dashboard's own stylesheet and images and
// nothing else: no script at all, no framing, forms only to itself.
const contentSecurityPolicy = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// sessionCookie names the cookie that binds CSRF tokens to one browser.
const sessionCookie = "mutual_dashboard_session"

// csrfField is the form field that carries the CSRF token.
const csrfField = "csrf"

// guard wraps h with what every request passes: security headers, the
// Host check (loopback), the client's admin identity (TLS), a session, and
// for a state-changing request a same-origin check and the CSRF token.
func (d *Dashboard) guard(h http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		hd.Set("Cache-Control", "no-store")
		// Refusals before the caller is known say nothing of the
		// operator or the CA: plain text, no page.
		if r.TLS == nil && !loopback.Is(r.Host) {
			d.refuse(w, r, http.StatusMisdirectedRequest, "Refused: the dashboard answers only to a loopback host name (127.0.0.1, [::1] or localhost).")
			return
		}
		if r.TLS != nil {
			if err := d.checkClient(r.Context(), r.TLS); err != nil {
				d.refuse(w, r, http.StatusForbidden, "Refused: "+err.Error())
				return
			}
		}
		session := d.session(w, r)
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if err := cop.Check(r); err != nil {
				d.fail(w, r, http.StatusForbidden, "Refused: this request came from another site ("+err.Error()+"). Use the dashboard's own forms.")
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if session == "" || !hmac.Equal([]byte(r.PostFormValue(csrfField)), []byte(d.csrfToken(session))) {
				d.fail(w, r, http.StatusForbidden, "Refused: the form's CSRF token is missing or does not belong to this browser session. Reload the page and submit it again.")
				return
			}
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, session)))
	})
}

// refuse answers a caller not yet known to be the operator, in plain text.
func (d *Dashboard) refuse(w http.ResponseWriter, r *http.Request, status int, msg string) {
	d.log.Info("dashboard request refused", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "status", status, "reason", msg)
	http.Error(w, msg, status)
}

type sessionKey struct{}

// session returns the browser's session ID, making one (and setting its
// cookie) on a GET that has none. A POST without one gets "".
func (d *Dashboard) session(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(sessionCookie); err == nil && len(c.Value) == 43 {
		return c.Value
	}
	if r.Method != http.MethodGet {
		return ""
	}
	var b [32]byte
	rand.Read(b[:])
	s := base64.RawURLEncoding.EncodeToString(b[:])
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: s, Path: "/", HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	return s
}

// csrfToken is the token a form of this session must carry: an HMAC of the
// session under a key that never leaves the process.
func (d *Dashboard) csrfToken(session string) string {
	m := hmac.New(sha256.New, d.csrfKey[:])
	m.Write([]byte("csrf\x00" + session))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// csrfFor returns the CSRF token of the request's session.
func (d *Dashboard) csrfFor(r *http.Request) string {
	s, _ := r.Context().Value(sessionKey{}).(string)
	if s == "" {
		return ""
	}
	return d.csrfToken(s)
}

// tlsConfig serves Config.TLS's certificate and requires a client
// certificate under its roots.
func (d *Dashboard) tlsConfig() *tls.Config {
	id := d.cfg.TLS
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{id.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pki.CertPool(id.Roots),
	}
}

// checkClient accepts a verified client certificate only for an admin of
// the operator's trust domain that the CA knows and has not revoked.
func (d *Dashboard) checkClient(ctx context.Context, cs *tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return errors.New("a client certificate for an admin identity is required")
	}
	leaf := cs.PeerCertificates[0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return fmt.Errorf("the client certificate carries no SPIFFE ID: %w", err)
	}
	if pki.KindOf(id) != pki.KindAdmin || id.TrustDomain() != d.cfg.Identity.ID.TrustDomain() {
		return fmt.Errorf("%s is not an admin of %s (spiffe://%s/admin/NAME)", id, d.cfg.Identity.ID.TrustDomain().Name(), d.cfg.Identity.ID.TrustDomain().Name())
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rec, err := d.cfg.CA.Certificate(ctx, pki.FormatSerial(leaf.SerialNumber))
	if err != nil {
		return fmt.Errorf("the CA could not confirm the client certificate of %s: %w", id, err)
	}
	if rec.RevokedAt != nil {
		return fmt.Errorf("the client certificate of %s was revoked at %s", id, rec.RevokedAt.Format(time.RFC3339))
	}
	return nil
}
