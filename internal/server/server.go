// Package server is the CA service's HTTPS edge: it terminates TLS (with
// optional client certificates), decodes the JSON API of package api, calls
// the Authority (through the interface declared here, which *ca.Authority
// provides), and maps its failures to HTTP statuses. Metrics are served on a
// separate listener. Package caservice assembles and runs it.
package server

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/url"
	"slices"
	"strconv"

	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"golang.org/x/crypto/ocsp"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/h2guard"
	"github.com/mutual-tls/mutual/internal/metricsserver"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/revocation/publish"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/translog"
)

// StoreHealth reports whether the store answers (Ping) and whether it can
// record an issuance now (Health: a real write, on PostgreSQL under the
// issuance log's lock taken within a bound).
type StoreHealth interface {
	Ping(ctx context.Context) error
	Health(ctx context.Context) error
}

// Issuance is what the API asks of the certificate authority to issue:
// enrollment with a join token, renewal and workload identities through a
// node, and the check of a client certificate. *ca.Authority provides it.
type Issuance interface {
	CheckPeer(ctx context.Context, peer *x509.Certificate) (spiffeid.ID, error)
	Enroll(ctx context.Context, token string, csrPEM []byte, ttl time.Duration) (*ca.Issued, error)
	Renew(ctx context.Context, peer *x509.Certificate, csrPEM []byte, ttl time.Duration) (*ca.Issued, error)
	EntriesForNode(ctx context.Context, peer *x509.Certificate) (spiffeid.ID, []store.Entry, error)
	IssueForNode(ctx context.Context, peer *x509.Certificate, entryID string, csrPEM []byte) (*ca.Issued, error)
}

// Administration is what the admin endpoints ask of the certificate
// authority. *ca.Authority provides it.
type Administration interface {
	CreateToken(ctx context.Context, by spiffeid.ID, r ca.TokenRequest) (string, store.Token, error)
	ListTokens(ctx context.Context) ([]store.Token, error)
	ListCertificates(ctx context.Context, f store.CertificateFilter) ([]store.Certificate, error)
	Revoke(ctx context.Context, by spiffeid.ID, r ca.RevokeRequest) ([]store.Revocation, error)
	CreateEntry(ctx context.Context, by spiffeid.ID, r ca.EntryRequest) (store.Entry, error)
	ListEntries(ctx context.Context) ([]store.Entry, error)
	DeleteEntry(ctx context.Context, by spiffeid.ID, id string) error
}

// Authority is the certificate authority behind the API.
type Authority interface {
	Issuance
	Administration
	CertificateLookup
}

// OCSPResponder answers DER OCSP requests (*publish.Responder, or
// publish.Responders for several issuers).
type OCSPResponder interface {
	Respond(ctx context.Context, reqDER []byte) []byte
}

// Config builds a Server. Every field is required unless it says otherwise.
type Config struct {
	// Authority answers the API's requests.
	Authority Authority
	// TrustDomain is the CA's trust domain, named in the bundle and in
	// refusals.
	TrustDomain spiffeid.TrustDomain
	// Roots are the CA's trust anchors: served as the bundle, and the roots
	// client certificates are verified against.
	Roots []*x509.Certificate
	// IssuerCert is the intermediate that signs leaves and the CRL; the
	// CRL's name is derived from it.
	IssuerCert *x509.Certificate
	// Certificate returns the server's TLS certificate (chain: leaf,
	// intermediate). The roots are added for a client that offers
	// api.BootstrapALPN: a join-token holder finds there the root it pins by
	// fingerprint.
	Certificate func() *tls.Certificate
	// Store is checked by /healthz and /readyz.
	Store StoreHealth
	// Log receives one line per request error; nil discards.
	Log *slog.Logger
	// Registry receives the server's metrics; nil makes a private one.
	Registry *prometheus.Registry
	// CRL, OCSP and Hub serve revocation; nil leaves their routes out.
	CRL  *publish.CRL
	OCSP OCSPResponder
	Hub  *publish.Hub
	// RetiredCRLs are the CRLs of intermediates a rotation retired, each
	// served at /crl/ plus its issuer's key id; nil when none.
	RetiredCRLs []*publish.CRL
	// Intermediates are the other intermediates of this CA whose leaves a
	// client may send alone (retired by a rotation, cross-signed during a
	// root rotation); nil when none.
	Intermediates []*x509.Certificate
	// IssuanceLog serves the issuance log under /log/; nil leaves it out.
	IssuanceLog *translog.Server
	// SPIFFEBundle, when set, returns this trust domain's SPIFFE bundle
	// (JSON), served at /v1/federation/bundle.
	SPIFFEBundle func() []byte
	// Federation, when set, serves the federation admin API and adds the
	// federated bundles to /v1/bundle.
	Federation Federation
	// Partners, when set, serves the partnership admin API.
	Partners Partners
	// JWT signs JWT-SVIDs and serves the SPIFFE bundle; nil leaves their
	// routes out.
	JWT JWTIssuance
	// Findings, when set, keeps what the issuance log's monitor reports
	// and serves it at /v1/log/findings (admin).
	Findings Findings
	// Tokens, when set, voids unused join tokens at
	// POST /v1/tokens/{id}/void (admin).
	Tokens TokenVoiding
}

// Server serves the CA API.
type Server struct {
	cfg Config
	// issuing is what a rotation changes (SetIssuer): the intermediate,
	// the CRLs and the client-certificate anchors.
	issuing atomic.Pointer[issuing]
	log     *slog.Logger
	mux     *http.ServeMux
	metrics *metrics
	reg     *prometheus.Registry
}

// issuing is the state of one intermediate: it signs leaves and the CRL,
// and with the roots and the retired and cross-signed intermediates it
// anchors client certificates.
type issuing struct {
	cert      *x509.Certificate
	crl       *publish.CRL
	retired   []*publish.CRL
	clientCAs *x509.CertPool
}

// Issuing is what SetIssuer moves the server to after an intermediate
// rotation.
type Issuing struct {
	// IssuerCert, CRL, RetiredCRLs and Intermediates replace the Config
	// fields of the same names.
	IssuerCert    *x509.Certificate
	CRL           *publish.CRL
	RetiredCRLs   []*publish.CRL
	Intermediates []*x509.Certificate
}

// SetIssuer moves the server to a new intermediate (after a rotation)
// while it serves: connections open stay open, and the next handshakes
// and CRL requests see the new state.
func (s *Server) SetIssuer(is Issuing) {
	// Many TLS stacks send their leaf alone: the CA's own intermediates
	// are anchors besides the roots, name-constrained to the trust domain
	// and checked for validity like any chain element.
	anchors := slices.Clone(s.cfg.Roots)
	if is.IssuerCert != nil {
		anchors = append(anchors, is.IssuerCert)
	}
	anchors = append(anchors, is.Intermediates...)
	for _, c := range is.RetiredCRLs {
		anchors = append(anchors, c.Issuer.Cert)
	}
	s.issuing.Store(&issuing{cert: is.IssuerCert, crl: is.CRL, retired: is.RetiredCRLs, clientCAs: pki.CertPool(anchors)})
}

// New builds a Server; it starts nothing.
func New(cfg Config) *Server {
	s := &Server{cfg: cfg, log: cfg.Log, reg: cfg.Registry}
	s.SetIssuer(Issuing{IssuerCert: cfg.IssuerCert, CRL: cfg.CRL, RetiredCRLs: cfg.RetiredCRLs, Intermediates: cfg.Intermediates})
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
	}
	s.metrics = newMetrics(s.reg)
	s.reg.MustRegister(
		metricsserver.CertificateExpiry("mutual_ca_intermediate_expiry_timestamp_seconds", "NotAfter of the intermediate that signs certificates.",
			func() *x509.Certificate { return s.issuing.Load().cert }),
		metricsserver.CertificateExpiry("mutual_ca_tls_certificate_expiry_timestamp_seconds", "NotAfter of the CA service's own TLS certificate.",
			s.tlsLeaf))
	if hub := cfg.Hub; hub != nil {
		s.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mutual_ca_feed_streams", Help: "Revocation feed streams open now.",
		}, func() float64 { return float64(hub.Streams()) }))
	}
	s.mux = http.NewServeMux()
	s.route("GET /healthz", "healthz", s.healthz)
	s.route("GET /readyz", "readyz", s.healthz)
	s.route("GET /livez", "livez", func(w http.ResponseWriter, r *http.Request) (int, error) {
		return ok(w, map[string]string{"status": "alive"})
	})
	s.route("GET /v1/bundle", "bundle", s.bundle)
	s.route("POST /v1/enroll", "enroll", s.enroll)
	s.route("POST /v1/renew", "renew", s.renew)
	s.route("POST /v1/tokens", "tokens_create", s.admin(s.createToken))
	s.route("GET /v1/tokens", "tokens_list", s.admin(s.listTokens))
	s.route("GET /v1/certificates", "certificates_list", s.admin(s.listCertificates))
	s.route("GET /v1/certificates/{serial}", "certificate", s.admin(s.certificate))
	s.route("GET /v1/certificates/summary", "certificates_summary", s.admin(s.summary))
	s.route("POST /v1/revoke", "revoke", s.admin(s.revoke))
	s.route("POST /v1/entries", "entries_create", s.admin(s.createEntry))
	s.route("GET /v1/entries", "entries_list", s.admin(s.listEntries))
	s.route("DELETE /v1/entries/{id}", "entries_delete", s.admin(s.deleteEntry))
	s.route("GET /v1/node/entries", "node_entries", s.nodeEntries)
	s.route("POST /v1/node/svid", "node_svid", s.nodeSVID)
	s.route("GET /v1/revocations", "revocation_feed", s.feed)
	s.routeFederation()
	s.routePartners()
	s.routeJWT()
	s.routeFindings()
	s.routeTokens()
	rh := s.RevocationHandler()
	s.mux.Handle("GET /crl/{name}", rh)
	s.mux.Handle("POST /ocsp", rh)
	s.mux.Handle("GET /ocsp/{req...}", rh)
	s.mux.Handle("GET /log/", rh)
	s.mux.Handle("GET /v1/log/lookup", rh)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, api.CodeNotFound, "no such endpoint "+r.Method+" "+r.URL.Path+"; the API lives under /v1/")
	})
	return s
}

// Handler returns the API handler (without TLS).
func (s *Server) Handler() http.Handler { return s.mux }

// Registry returns the registry holding the server's metrics.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// TLSConfig is the listener's TLS configuration: TLS 1.3 by default, 1.2
// with AEAD suites at least, client certificates verified against the CA's
// roots when given. A client may send its leaf alone (many TLS stacks do):
// the CA's own intermediates (current, retired by a rotation, cross-signed)
// are also anchors, name-constrained to the trust domain and checked for
// validity like any chain element. Each handshake reads them as SetIssuer
// left them.
func (s *Server) TLSConfig() *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  s.issuing.Load().clientCAs,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			tc := s.cfg.Certificate()
			if tc == nil || !slices.Contains(hello.SupportedProtos, api.BootstrapALPN) {
				return tc, nil
			}
			withRoots := *tc
			withRoots.Certificate = slices.Clone(tc.Certificate)
			for _, r := range s.cfg.Roots {
				withRoots.Certificate = append(withRoots.Certificate, r.Raw)
			}
			return &withRoots, nil
		},
		NextProtos: []string{"h2", "http/1.1"},
	}
	// Cloned at each handshake, after http2 configured cfg in place.
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := cfg.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = s.issuing.Load().clientCAs
		return c, nil
	}
	return cfg
}

// Serve answers API requests on ln (a plain TCP listener; TLS is added here)
// until ctx is done, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.mux,
		TLSConfig:         s.TLSConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.New(handshakeLog{s.log}, "", 0),
	}
	// Bound what one HTTP/2 client can make the CA do (rapid reset,
	// CONTINUATION floods, idle streams).
	h2guard.Configure(hs, h2guard.Options{Log: s.log})
	return serve(ctx, hs, tls.NewListener(ln, hs.TLSConfig))
}

// handshakeLog is the API server's ErrorLog: a refused TLS handshake (a
// client certificate the CA does not accept, no protocol in common) is a
// warning with the client's address and the reason, whatever the log
// level; a connection closed before a handshake (a port check) and the
// rest of net/http's messages stay at debug level.
type handshakeLog struct{ log *slog.Logger }

func (h handshakeLog) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	rest, ok := strings.CutPrefix(line, "http: TLS handshake error from ")
	remote, why, _ := strings.Cut(rest, ": ")
	if !ok || why == "EOF" || strings.HasSuffix(why, "connection reset by peer") {
		h.log.Debug(line)
		return len(p), nil
	}
	h.log.Warn("TLS handshake refused", "remote", remote, "reason", why)
	return len(p), nil
}

// ServeMetrics serves Prometheus metrics at /metrics on ln until ctx is done.
func (s *Server) ServeMetrics(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	return serve(ctx, &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, ln)
}

// ServeRevocation serves RevocationHandler over plain HTTP on ln until ctx
// is done.
func (s *Server) ServeRevocation(ctx context.Context, ln net.Listener) error {
	return serve(ctx, &http.Server{Handler: s.RevocationHandler(), ReadHeaderTimeout: 10 * time.Second}, ln)
}

func serve(ctx context.Context, hs *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := hs.Shutdown(sctx)
		<-errc
		return err
	}
}

type handler func(w http.ResponseWriter, r *http.Request) (status int, err error)

func (s *Server) route(pattern, name string, h handler) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		status, err := h(w, r)
		if err != nil {
			status = s.fail(w, r, name, err)
		}
		s.metrics.observe(name, status, time.Since(start))
	})
}

// fail writes err as a JSON error and returns the status it chose.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, route string, err error) int {
	status, code := http.StatusInternalServerError, api.CodeInternal
	var ce *ca.Error
	var be badRequest
	switch {
	case errors.As(err, &be):
		status, code = http.StatusBadRequest, api.CodeBadRequest
	case errors.As(err, &ce):
		code = ce.Code
		switch ce.Kind {
		case ca.KindInvalid:
			status = http.StatusBadRequest
		case ca.KindUnauthenticated:
			status = http.StatusUnauthorized
		case ca.KindForbidden:
			status = http.StatusForbidden
		case ca.KindNotFound:
			status = http.StatusNotFound
		case ca.KindUnavailable:
			status = http.StatusServiceUnavailable
			w.Header().Set("Retry-After", "1")
		}
	}
	if status >= 500 {
		attrs := []any{"route", route, "remote", r.RemoteAddr, "status", status, "code", code, "error", err.Error()}
		if ce != nil && ce.Err != nil {
			attrs = append(attrs, "cause", ce.Err.Error()) // what the anonymous answer leaves out
		}
		s.log.Error("request failed", attrs...)
	} else {
		s.metrics.refused.WithLabelValues(code).Inc()
		s.log.Info("request refused", "route", route, "remote", r.RemoteAddr, "status", status, "code", code, "reason", err.Error())
	}
	writeError(w, status, code, err.Error())
	return status
}

type badRequest struct{ error }

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, api.Error{Error: msg, Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func ok(w http.ResponseWriter, v any) (int, error) {
	writeJSON(w, http.StatusOK, v)
	return http.StatusOK, nil
}

// healthz answers /healthz and /readyz: 200 only when this replica can
// issue now (the store takes a real write, and on PostgreSQL this replica
// takes the issuance log's lock within a bound); otherwise 503 with the
// reason, "damaged" when retrying cannot help.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) (int, error) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	err := s.cfg.Store.Ping(ctx)
	if err == nil {
		err = s.cfg.Store.Health(ctx)
	}
	if err != nil {
		s.metrics.storeUp.Set(0)
		// The details (database user, host, port) are for the log, not for
		// anonymous callers; a damaged store says so, since retrying cannot
		// help and the operator must restore it.
		s.log.Warn("health check: the store cannot record an issuance", "route", r.URL.Path, "error", err.Error())
		status, msg := "unavailable", "the CA cannot record an issuance now (store unreachable, or the issuance log's lock held by another replica); the CA's log says why"
		if errors.Is(err, store.ErrDamaged) {
			status, msg = "damaged", err.Error()
		}
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": status, "error": msg})
		return http.StatusServiceUnavailable, nil
	}
	s.metrics.storeUp.Set(1)
	return ok(w, map[string]string{"status": "ok"})
}

func (s *Server) bundle(w http.ResponseWriter, r *http.Request) (int, error) {
	fp := pki.Fingerprint(s.cfg.Roots[0])
	// The local bundle is served even when the store cannot say which
	// federated bundles it holds (bootstrap needs it); those are left out.
	fed, fedJWT, err := s.federatedPEM(r.Context())
	if err != nil {
		s.log.Warn("bundle served without the federated bundles: the store did not answer", "error", err.Error())
	}
	return ok(w, api.BundleResponse{
		TrustDomain:         s.cfg.TrustDomain.Name(),
		RootsPEM:            string(pki.EncodeCertificates(s.cfg.Roots...)),
		RootFingerprint:     hex.EncodeToString(fp[:]),
		FederatedBundles:    fed,
		FederatedJWTBundles: fedJWT,
	})
}

func (s *Server) enroll(w http.ResponseWriter, r *http.Request) (int, error) {
	var req api.EnrollRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return 0, badRequest{err}
	}
	if req.Token == "" || req.CSR == "" {
		return 0, badRequest{errors.New(`both "token" and "csr" are required`)}
	}
	is, err := s.cfg.Authority.Enroll(r.Context(), req.Token, []byte(req.CSR), time.Duration(req.TTL))
	if err != nil {
		return 0, err
	}
	s.metrics.issued.WithLabelValues("enroll").Inc()
	return okIssued(w, is)
}

// peer returns the verified client certificate, if any.
func peer(r *http.Request) *x509.Certificate {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return nil
	}
	return r.TLS.VerifiedChains[0][0]
}

func (s *Server) renew(w http.ResponseWriter, r *http.Request) (int, error) {
	p := peer(r)
	if p == nil {
		return 0, &ca.Error{Kind: ca.KindUnauthenticated, Code: api.CodeClientCertificateRequired,
			Msg: "renewal needs the current certificate as the TLS client certificate; after expiry, enroll again with a join token"}
	}
	var req api.RenewRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return 0, badRequest{err}
	}
	if req.CSR == "" {
		return 0, badRequest{errors.New(`"csr" is required`)}
	}
	is, err := s.cfg.Authority.Renew(r.Context(), p, []byte(req.CSR), time.Duration(req.TTL))
	if err != nil {
		return 0, err
	}
	s.metrics.issued.WithLabelValues("renew").Inc()
	return okIssued(w, is)
}

type adminHandler func(w http.ResponseWriter, r *http.Request, by spiffeid.ID) (int, error)

// admin requires a verified, unrevoked client certificate whose SPIFFE ID
// path is under /admin/.
func (s *Server) admin(h adminHandler) handler {
	return func(w http.ResponseWriter, r *http.Request) (int, error) {
		p := peer(r)
		td := s.cfg.TrustDomain.Name()
		if p == nil {
			return 0, &ca.Error{Kind: ca.KindUnauthenticated, Code: api.CodeAdminRequired,
				Msg: "this endpoint needs an admin client certificate (spiffe://" + td + "/admin/NAME): pass --identity-dir DIR/admin"}
		}
		id, err := s.cfg.Authority.CheckPeer(r.Context(), p)
		if err != nil {
			return 0, err
		}
		if pki.KindOf(id) != pki.KindAdmin {
			return 0, &ca.Error{Kind: ca.KindForbidden, Code: api.CodeAdminRequired,
				Msg: id.String() + " is not an admin: this endpoint needs a client certificate for spiffe://" + td + "/admin/NAME"}
		}
		return h(w, r, id)
	}
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, by spiffeid.ID) (int, error) {
	var req api.TokenRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return 0, badRequest{err}
	}
	tok, rec, err := s.cfg.Authority.CreateToken(r.Context(), by, ca.TokenRequest{
		ID: req.SPIFFEID, TTL: time.Duration(req.TTL), CertTTL: time.Duration(req.CertTTL),
		DNSNames: req.DNSNames, IPAddresses: req.IPAddresses, Roles: req.Roles,
	})
	if err != nil {
		return 0, err
	}
	s.metrics.tokens.Inc()
	return ok(w, api.TokenResponse{Token: tok, ID: rec.ID, SPIFFEID: rec.SPIFFEID, ExpiresAt: rec.ExpiresAt})
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, _ spiffeid.ID) (int, error) {
	ts, err := s.cfg.Authority.ListTokens(r.Context())
	if err != nil {
		return 0, err
	}
	out := api.TokenList{Tokens: []api.TokenInfo{}}
	for _, t := range ts {
		ti := api.TokenInfo{ID: t.ID, SPIFFEID: t.SPIFFEID, DNSNames: t.DNSNames, IPAddresses: t.IPAddresses,
			CertTTL: api.Duration(t.CertTTL), CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, CreatedBy: t.CreatedBy, UsedSerial: t.UsedSerial}
		if !t.UsedAt.IsZero() {
			u := t.UsedAt
			ti.UsedAt = &u
		}
		out.Tokens = append(out.Tokens, ti)
	}
	return ok(w, out)
}

func (s *Server) listCertificates(w http.ResponseWriter, r *http.Request, _ spiffeid.ID) (int, error) {
	f := store.CertificateFilter{SPIFFEID: r.URL.Query().Get("spiffe_id")}
	if v := r.URL.Query().Get("valid"); v == "true" || v == "1" {
		f.ValidAt = time.Now()
	}
	if err := statusFilter(&f, r.URL.Query().Get("status"), r.URL.Query().Get("expiring_within"), time.Now()); err != nil {
		return 0, badRequest{err}
	}
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 100_000 {
			return 0, badRequest{errors.New("limit must be a number from 1 to 100000")}
		}
		f.Limit = n
	}
	if v := r.URL.Query().Get("after"); v != "" {
		c, err := store.ParseCursor(v)
		if err != nil {
			return 0, badRequest{fmt.Errorf("after: %w", err)}
		}
		f.After = c
	}
	limit := f.Limit
	if limit == 0 {
		limit = 1000
	}
	withPEM := r.URL.Query().Get("pem") == "true"
	cs, err := s.cfg.Authority.ListCertificates(r.Context(), f)
	if err != nil {
		return 0, err
	}
	out := api.CertificateList{Certificates: []api.CertificateInfo{}}
	for _, c := range cs {
		out.Certificates = append(out.Certificates, certificateInfo(c, withPEM))
	}
	if len(cs) == limit {
		out.Next = cs[len(cs)-1].Cursor().String()
	}
	return ok(w, out)
}

// statusFilter narrows f to the certificates in status (?status=) at now:
// valid (unexpired and unrevoked), expiring (valid and expiring within
// ?expiring_within=, default api.DefaultExpiringWithin), revoked, or all
// ("" too).
func statusFilter(f *store.CertificateFilter, status, within string, now time.Time) error {
	soon := api.DefaultExpiringWithin
	if within != "" {
		d, err := time.ParseDuration(within)
		if err != nil || d <= 0 {
			return fmt.Errorf("expiring_within %q: want a positive duration such as 24h", within)
		}
		soon = d
	}
	switch api.CertificateStatus(status) {
	case "", api.StatusAll:
	case api.StatusValid:
		f.ValidAt, f.Revoked = now, store.NotRevoked
	case api.StatusExpiring:
		f.ValidAt, f.ExpiresBefore, f.Revoked = now, now.Add(soon), store.NotRevoked
	case api.StatusRevoked:
		f.Revoked = store.OnlyRevoked
	default:
		return fmt.Errorf("status %q: want one of %s", status, strings.Join(api.CertificateStatuses(), ", "))
	}
	return nil
}

func certificateInfo(c store.Certificate, withPEM bool) api.CertificateInfo {
	ci := api.CertificateInfo{Serial: c.Serial, SPIFFEID: c.SPIFFEID, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
		IssuedAt: c.IssuedAt, RequestedBy: c.RequestedBy}
	if c.Revoked() {
		t := c.RevokedAt
		ci.RevokedAt = &t
		ci.RevocationReason = pki.RevocationReasonName(c.RevocationReason)
	}
	if withPEM {
		if x, err := x509.ParseCertificate(c.DER); err == nil {
			ci.CertificatePEM = string(pki.EncodeCertificates(x))
		}
	}
	return ci
}

func revokeResponse(revs []store.Revocation, m *metrics) api.RevokeResponse {
	out := api.RevokeResponse{Revoked: []api.Revoked{}}
	for _, rv := range revs {
		if !rv.AlreadyRevoked {
			m.revocations.Inc()
		}
		out.Revoked = append(out.Revoked, api.Revoked{Serial: rv.Serial, SPIFFEID: rv.SPIFFEID, AlreadyRevoked: rv.AlreadyRevoked})
	}
	return out
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request, by spiffeid.ID) (int, error) {
	var req api.RevokeRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return 0, badRequest{err}
	}
	reason, err := pki.ParseRevocationReason(req.Reason)
	if err != nil {
		return 0, badRequest{err}
	}
	revs, err := s.cfg.Authority.Revoke(r.Context(), by, ca.RevokeRequest{Serial: req.Serial, ID: req.SPIFFEID, Node: req.Node, Reason: reason})
	if err != nil {
		return 0, err
	}
	return ok(w, revokeResponse(revs, s.metrics))
}

func entryInfo(e store.Entry) api.Entry {
	return api.Entry{ID: e.ID, SPIFFEID: e.SPIFFEID, Nodes: e.Nodes, Selectors: e.Selectors, CertTTL: api.Duration(e.CertTTL),
		DNSNames: e.DNSNames, Roles: e.Roles, CreatedAt: e.CreatedAt, CreatedBy: e.CreatedBy}
}

func (s *Server) createEntry(w http.ResponseWriter, r *http.Request, by spiffeid.ID) (int, error) {
	var req api.EntryRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return 0, badRequest{err}
	}
	e, err := s.cfg.Authority.CreateEntry(r.Context(), by, ca.EntryRequest{ID: req.SPIFFEID, Nodes: req.Nodes, Selectors: req.Selectors,
		CertTTL: time.Duration(req.CertTTL), DNSNames: req.DNSNames, Roles: req.Roles})
	if err != nil {
		return 0, err
	}
	return ok(w, entryInfo(e))
}

func (s *Server) listEntries(w http.ResponseWriter, r *http.Request, _ spiffeid.ID) (int, error) {
	es, err := s.cfg.Authority.ListEntries(r.Context())
	if err != nil {
		return 0, err
	}
	out := api.EntryList{Entries: []api.Entry{}}
	for _, e := range es {
		out.Entries = append(out.Entries, entryInfo(e))
	}
	return ok(w, out)
}

func (s *Server) deleteEntry(w http.ResponseWriter, r *http.Request, by spiffeid.ID) (int, error) {
	if err := s.cfg.Authority.DeleteEntry(r.Context(), by, r.PathValue("id")); err != nil {
		return 0, err
	}
	return ok(w, map[string]string{"deleted": r.PathValue("id")})
}

func (s *Server) nodeEntries(w http.ResponseWriter, r *http.Request) (int, error) {
	p := peer(r)
	if p == nil {
		return 0, &ca.Error{Kind: ca.KindUnauthenticated, Code: api.CodeNodeRequired, Msg: "this endpoint needs a node's client certificate (spiffe://TD/node/NAME)"}
	}
	_, es, err := s.cfg.Authority.EntriesForNode(r.Context(), p)
	if err != nil {
		return 0, err
	}
	out := api.EntryList{Entries: []api.Entry{}}
	for _, e := range es {
		out.Entries = append(out.Entries, entryInfo(e))
	}
	return ok(w, out)
}

func (s *Server) nodeSVID(w http.ResponseWriter, r *http.Request) (int, error) {
	p := peer(r)
	if p == nil {
		return 0, &ca.Error{Kind: ca.KindUnauthenticated, Code: api.CodeNodeRequired, Msg: "this endpoint needs a node's client certificate (spiffe://TD/node/NAME)"}
	}
	var req api.NodeSVIDRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return 0, badRequest{err}
	}
	if req.EntryID == "" || req.CSR == "" {
		return 0, badRequest{errors.New(`both "entry_id" and "csr" are required`)}
	}
	is, err := s.cfg.Authority.IssueForNode(r.Context(), p, req.EntryID, []byte(req.CSR))
	if err != nil {
		return 0, err
	}
	s.metrics.issued.WithLabelValues("node").Inc()
	return okIssued(w, is)
}

// feed streams revocations to any caller with a valid, unrevoked certificate
// of this CA, within the hub's bounds on streams per identity (429) and in
// all (503).
func (s *Server) feed(w http.ResponseWriter, r *http.Request) (int, error) {
	p := peer(r)
	if p == nil {
		return 0, &ca.Error{Kind: ca.KindUnauthenticated, Code: api.CodeClientCertificateRequired,
			Msg: "the revocation feed needs a client certificate of this trust domain"}
	}
	id, err := s.cfg.Authority.CheckPeer(r.Context(), p)
	if err != nil {
		return 0, err
	}
	if s.cfg.Hub == nil {
		return 0, &ca.Error{Kind: ca.KindUnavailable, Code: api.CodeNoFeed, Msg: "this server has no revocation feed"}
	}
	release, err := s.cfg.Hub.Admit(id.String())
	var le *publish.StreamLimitError
	if errors.As(err, &le) {
		status, code, limit := http.StatusServiceUnavailable, api.CodeFeedFull, "total"
		if le.PerPeer {
			status, code, limit = http.StatusTooManyRequests, api.CodeFeedStreamsPerIdentity, "identity"
		}
		s.metrics.feedRefused.WithLabelValues(limit).Inc()
		s.log.Warn("revocation feed stream refused", "spiffe_id", id.String(), "remote", r.RemoteAddr, "limit", limit, "max", le.Limit)
		w.Header().Set("Retry-After", "10")
		writeError(w, status, code, le.Error())
		return status, nil
	}
	if err != nil {
		return 0, err
	}
	defer release()
	s.cfg.Hub.ServeFeed(w, r)
	return http.StatusOK, nil
}

// RevocationHandler serves the CRL, OCSP and the issuance log: signed data
// that needs no TLS, so it may also be served on a plain HTTP listener.
func (s *Server) RevocationHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /crl/{name}", func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		name := r.PathValue("name")
		is := s.issuing.Load()
		want := revocation.IssuerKeyID(is.cert)
		base, ext, _ := strings.Cut(name, ".")
		crl := is.crl
		if base != want {
			crl = nil
			for _, c := range is.retired {
				if base == revocation.IssuerKeyID(c.Issuer.Cert) {
					crl = c
				}
			}
		}
		if crl == nil || (ext != "crl" && ext != "pem") {
			writeError(w, http.StatusNotFound, api.CodeNotFound, "no CRL "+name+": this CA publishes /crl/"+want+".crl (DER) and .pem")
			s.metrics.observe("crl", http.StatusNotFound, time.Since(start))
			return
		}
		der, seq, err := crl.Current(r.Context())
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, api.CodeStoreUnavailable, "the CRL cannot be built now: "+err.Error())
			s.metrics.observe("crl", http.StatusServiceUnavailable, time.Since(start))
			return
		}
		w.Header().Set("X-Mutual-Revocation-Seq", strconv.FormatInt(seq, 10))
		w.Header().Set("Cache-Control", "max-age=60")
		if ext == "pem" {
			w.Header().Set("Content-Type", "application/x-pem-file")
			pem.Encode(w, &pem.Block{Type: "X509 CRL", Bytes: der})
		} else {
			w.Header().Set("Content-Type", "application/pkix-crl")
			w.Write(der)
		}
		s.metrics.observe("crl", http.StatusOK, time.Since(start))
	})
	ocspHandler := func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		var req []byte
		if r.Method == http.MethodPost {
			req, _ = io.ReadAll(io.LimitReader(r.Body, 16<<10))
		} else {
			raw := r.PathValue("req")
			if u, err := url.PathUnescape(raw); err == nil {
				raw = u
			}
			req, _ = base64.StdEncoding.DecodeString(raw)
		}
		resp := ocsp.MalformedRequestErrorResponse
		if s.cfg.OCSP != nil {
			resp = s.cfg.OCSP.Respond(r.Context(), req)
		}
		w.Header().Set("Content-Type", "application/ocsp-response")
		w.Write(resp)
		s.metrics.observe("ocsp", http.StatusOK, time.Since(start))
	}
	mux.HandleFunc("POST /ocsp", ocspHandler)
	mux.HandleFunc("GET /ocsp/{req...}", ocspHandler)
	if s.cfg.IssuanceLog != nil {
		lh := s.cfg.IssuanceLog.Handler()
		mux.Handle("GET /log/", lh)
		mux.Handle("GET /v1/log/lookup", lh)
	}
	return mux
}
