// Package keyrelease is the key-release service of sealed data: it wraps
// the data keys of new sealed files under a key-encryption key (KEK) that
// never leaves it, and unwraps them only over mTLS, for a caller whose
// certificate verifies now against the trust bundle, is not revoked, and
// matches the policy sealed in the file. Every wrap, unwrap and refusal is
// recorded in an append-only audit log (package auditlog) with who, what
// and when.
//
// It runs beside the CA (mutual keys serve) rather than inside it: it needs
// only a certificate, the bundle, the revocation feed and its own keys, so
// it holds no CA key and no store, and can run where the data is.
package keyrelease

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/auditlog"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/seal"
	"github.com/mutual-tls/mutual/tlsconfig"
)

// API paths.
const (
	WrapPath       = "/v1/keys/wrap"
	UnwrapPath     = "/v1/keys/unwrap"
	RewrapPath     = "/v1/keys/rewrap"
	CheckpointPath = "/v1/keys/log/checkpoint"
)

// ServerPath is the SPIFFE ID path a key-release service runs as by
// default: spiffe://TD/mutual-keys (a join token can grant it; /mutual/ is the CA's).
const ServerPath = "/mutual-keys"

// maxRequest bounds a request body: a header and its JSON.
const maxRequest = 64 << 10

// RevocationChecker refuses a revoked certificate, and every certificate
// while the revocation status is unknown: revocation.Watcher's Check.
type RevocationChecker interface {
	Check(id spiffeid.ID, chain []*x509.Certificate) error
}

// WrapRequest asks to wrap a new file's data key for its header body.
type WrapRequest struct {
	Body    []byte `json:"body"`
	DataKey []byte `json:"data_key"`
}

// WrapResponse is the key slot to write into the header.
type WrapResponse struct {
	KeyID   string `json:"kek"`
	Wrapped []byte `json:"wrapped"`
}

// UnwrapRequest carries a sealed file's whole header (for unwrap and
// rewrap).
type UnwrapRequest struct {
	Header []byte `json:"header"`
}

// UnwrapResponse is the released data key.
type UnwrapResponse struct {
	DataKey []byte `json:"data_key"`
}

// ErrorResponse is the body of every refusal.
type ErrorResponse struct {
	Error string `json:"error"`
}

// Record is one audit log entry: who (Caller, Serial) did what (Action on
// File, the hash of the sealed header's body) when (At), and what the
// service decided.
type Record struct {
	Version  int          `json:"v"`
	At       time.Time    `json:"at"`
	Action   string       `json:"action"`
	Decision string       `json:"decision"`
	Caller   string       `json:"caller,omitempty"`
	Serial   string       `json:"serial,omitempty"`
	File     string       `json:"file,omitempty"`
	KeyID    string       `json:"kek,omitempty"`
	Policy   *seal.Policy `json:"policy,omitempty"`
	Reason   string       `json:"reason,omitempty"`
	Remote   string       `json:"remote,omitempty"`
}

// Decisions recorded.
const (
	Released = "released"
	Refused  = "refused"
)

// Config is what a Service needs; every field is required but Now and Log.
type Config struct {
	Keys   *Keyring
	Bundle x509bundle.Source
	// Revocation is consulted at every request; without one the service
	// does not start (it would release keys to revoked certificates).
	Revocation RevocationChecker
	Audit      *auditlog.Log
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// Service answers wrap and unwrap requests.
type Service struct {
	c Config
}

// New checks c and makes a service.
func New(c Config) (*Service, error) {
	switch {
	case c.Keys == nil:
		return nil, errors.New("key-release service: no key-encryption keys")
	case c.Bundle == nil:
		return nil, errors.New("key-release service: no trust bundle")
	case c.Revocation == nil:
		return nil, errors.New("key-release service: no revocation source: it would release keys to revoked certificates; give the CA's address (--ca)")
	case c.Audit == nil:
		return nil, errors.New("key-release service: no audit log")
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return &Service{c: c}, nil
}

// TLSConfig is the service's server configuration: it presents svid's
// certificate and requires a client certificate that verifies against the
// bundle. A handshake refused with a certificate is recorded.
func (s *Service) TLSConfig(svid x509svid.Source) *tls.Config {
	cfg := tlsconfig.ServerConfig(svid, s.c.Bundle, tlsconfig.AuthorizeAny())
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		err := verify(cs)
		if err != nil && len(cs.PeerCertificates) > 0 {
			r := Record{Action: "connect", Decision: Refused, Reason: err.Error()}
			leaf := cs.PeerCertificates[0]
			r.Serial = pki.FormatSerial(leaf.SerialNumber)
			if len(leaf.URIs) == 1 {
				r.Caller = leaf.URIs[0].String()
			}
			s.record(r)
		}
		return err
	}
	return cfg
}

// Handler serves the API.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+WrapPath, s.wrap)
	mux.HandleFunc("POST "+UnwrapPath, s.unwrap)
	mux.HandleFunc("POST "+RewrapPath, s.rewrap)
	mux.HandleFunc("GET "+CheckpointPath, s.checkpoint)
	return mux
}

// caller is a verified, unrevoked peer.
type caller struct {
	id    spiffeid.ID
	leaf  *x509.Certificate
	roles []string
}

// refusal is a refused request: the status and what to say.
type refusal struct {
	status int
	msg    string
}

func (r *refusal) Error() string { return r.msg }

func refuse(status int, format string, a ...any) error {
	return &refusal{status: status, msg: fmt.Sprintf(format, a...)}
}

// authenticate verifies the caller's certificate again at this request
// (a connection outlives certificates and revocations) and checks its
// revocation status.
func (s *Service) authenticate(r *http.Request, rec *Record) (*caller, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, refuse(http.StatusUnauthorized, "no client certificate: unwrapping needs mTLS with a certificate of the trust domain")
	}
	leaf := r.TLS.PeerCertificates[0]
	rec.Serial = pki.FormatSerial(leaf.SerialNumber)
	id, chains, err := tlsconfig.VerifyPeer(r.TLS.PeerCertificates, s.c.Bundle, x509.ExtKeyUsageClientAuth, s.c.Now())
	if err != nil {
		return nil, refuse(http.StatusUnauthorized, "client certificate: %v", err)
	}
	rec.Caller = id.String()
	if err := s.c.Revocation.Check(id, chains[0]); err != nil {
		return nil, refuse(http.StatusForbidden, "client certificate: %v", err)
	}
	return &caller{id: id, leaf: leaf, roles: identity.Roles(leaf)}, nil
}

// handle runs one request: it decodes in, runs f, records the outcome and
// answers with f's result or its refusal. Nothing is answered unless the
// record is written.
func (s *Service) handle(w http.ResponseWriter, r *http.Request, action string, in any, f func(c *caller, rec *Record) (any, error)) {
	rec := Record{Action: action, Remote: r.RemoteAddr}
	out, err := s.run(r, &rec, in, f)
	rec.Decision = Released
	if err != nil {
		rec.Decision, rec.Reason = Refused, err.Error()
	}
	if lerr := s.record(rec); lerr != nil {
		writeJSON(w, http.StatusServiceUnavailable, ErrorResponse{Error: "the audit log cannot record this request, so nothing is released: " + lerr.Error()})
		return
	}
	if err != nil {
		status := http.StatusForbidden
		var rf *refusal
		if errors.As(err, &rf) {
			status = rf.status
		}
		writeJSON(w, status, ErrorResponse{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Service) run(r *http.Request, rec *Record, in any, f func(c *caller, rec *Record) (any, error)) (any, error) {
	c, err := s.authenticate(r, rec)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, maxRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(in); err != nil {
		return nil, refuse(http.StatusBadRequest, "request body: %v", err)
	}
	return f(c, rec)
}

// record appends rec to the audit log and to the process log.
func (s *Service) record(rec Record) error {
	rec.Version = 1
	rec.At = s.c.Now().UTC()
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	idx, err := s.c.Audit.Append(b)
	if err != nil {
		s.c.Log.Error("audit log append failed", "error", err.Error(), "action", rec.Action, "caller", rec.Caller)
		return err
	}
	s.c.Log.Info("key release", "action", rec.Action, "decision", rec.Decision, "caller", rec.Caller, "serial", rec.Serial,
		"file", rec.File, "kek", rec.KeyID, "reason", rec.Reason, "audit_index", idx)
	return nil
}

func (s *Service) wrap(w http.ResponseWriter, r *http.Request) {
	var req WrapRequest
	s.handle(w, r, "wrap", &req, func(c *caller, rec *Record) (any, error) {
		h, err := seal.ParseBody(req.Body)
		if err != nil {
			return nil, refuse(http.StatusBadRequest, "%v", err)
		}
		sum := h.BodyHash()
		rec.File, rec.Policy = hex.EncodeToString(sum[:]), &h.Policy
		if err := s.checkPolicy(h.Policy); err != nil {
			return nil, err
		}
		if len(req.DataKey) != seal.DataKeySize {
			return nil, refuse(http.StatusBadRequest, "data key of %d bytes, want %d", len(req.DataKey), seal.DataKeySize)
		}
		kek := s.c.Keys.Current()
		rec.KeyID = kek.ID()
		wrapped, err := kek.Wrap(r.Context(), req.DataKey, sum[:])
		if err != nil {
			return nil, fmt.Errorf("wrapping with %s: %w", kek.ID(), err)
		}
		return WrapResponse{KeyID: kek.ID(), Wrapped: wrapped}, nil
	})
}

// checkPolicy refuses a policy that no certificate could ever satisfy:
// one already expired, or naming only trust domains the service holds no
// bundle for.
func (s *Service) checkPolicy(p seal.Policy) error {
	if !p.NotAfter.IsZero() && !s.c.Now().Before(p.NotAfter) {
		return refuse(http.StatusBadRequest, "the policy expired at %s, before it was sealed: give a --not-after in the future", p.NotAfter.UTC().Format(time.RFC3339))
	}
	for _, td := range p.TrustDomains() {
		if _, err := s.c.Bundle.GetX509BundleForTrustDomain(td); err != nil {
			return refuse(http.StatusBadRequest, "the policy names trust domain %q, which this key service holds no bundle for, so no certificate of it can ever unseal: check the --to patterns", td.Name())
		}
	}
	return nil
}

// release parses a sealed header, checks the policy for c, and unwraps
// its data key.
func (s *Service) release(r *http.Request, c *caller, rec *Record, header []byte) (*seal.Header, []byte, error) {
	h, n, err := seal.ParseHeader(header)
	if err != nil {
		return nil, nil, refuse(http.StatusBadRequest, "%v", err)
	}
	if n != len(header) {
		return nil, nil, refuse(http.StatusBadRequest, "%d bytes after the header: send the header only", len(header)-n)
	}
	sum := h.BodyHash()
	rec.File, rec.Policy, rec.KeyID = hex.EncodeToString(sum[:]), &h.Policy, h.Slot.KeyID
	if err := h.Policy.Allow(c.id, c.roles, s.c.Now()); err != nil {
		return nil, nil, refuse(http.StatusForbidden, "%v", err)
	}
	kek, ok := s.c.Keys.Get(h.Slot.KeyID)
	if !ok {
		return nil, nil, refuse(http.StatusNotFound, "this key service does not hold key %s: the file was sealed by another key service, or its key was retired (restore it to the key directory)", h.Slot.KeyID)
	}
	key, err := kek.Unwrap(r.Context(), h.Slot.Wrapped, sum[:])
	if err != nil || len(key) != seal.DataKeySize {
		return nil, nil, refuse(http.StatusForbidden, "the wrapped key does not open under this header: the header or its policy was altered, or the key slot was forged")
	}
	return h, key, nil
}

func (s *Service) unwrap(w http.ResponseWriter, r *http.Request) {
	var req UnwrapRequest
	s.handle(w, r, "unwrap", &req, func(c *caller, rec *Record) (any, error) {
		_, key, err := s.release(r, c, rec, req.Header)
		if err != nil {
			return nil, err
		}
		return UnwrapResponse{DataKey: key}, nil
	})
}

// rewrap wraps a header's data key again under the current KEK, for a
// caller who may unseal it, so that a retired KEK can go.
func (s *Service) rewrap(w http.ResponseWriter, r *http.Request) {
	var req UnwrapRequest
	s.handle(w, r, "rewrap", &req, func(c *caller, rec *Record) (any, error) {
		h, key, err := s.release(r, c, rec, req.Header)
		if err != nil {
			return nil, err
		}
		kek := s.c.Keys.Current()
		sum := h.BodyHash()
		wrapped, err := kek.Wrap(r.Context(), key, sum[:])
		if err != nil {
			return nil, fmt.Errorf("wrapping with %s: %w", kek.ID(), err)
		}
		rec.KeyID = h.Slot.KeyID + " -> " + kek.ID()
		return WrapResponse{KeyID: kek.ID(), Wrapped: wrapped}, nil
	})
}

func (s *Service) checkpoint(w http.ResponseWriter, r *http.Request) {
	cp, err := s.c.Audit.Checkpoint()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, ErrorResponse{Error: err.Error()})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(cp)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
