// Package dashboard serves a web UI for operators: the estate at a glance
// (live certificates, what expires soon, recent revocations, CA health),
// certificates with search and revocation, identities and registration
// entries, nodes, the issuance log and its monitor's findings, the proxies'
// migration reports, partners and federation.
//
// It runs beside the operator, like `kubectl proxy`: it holds the operator's
// admin identity and asks the CA through package client, which accepts the
// CA only by its SPIFFE ID. Pages are server-rendered from embedded
// templates and need no JavaScript. Every answer carries a strict
// Content-Security-Policy (no script at all) and forbids framing; every
// state-changing request must be same-origin and carry a CSRF token bound to
// the browser's session. Nothing secret is rendered: the CA's API never
// answers token secrets or keys, and the dashboard shows only certificates.
//
// On a loopback address it serves plain HTTP to local browsers and refuses
// requests whose Host is not a loopback name (DNS rebinding). Anywhere else
// it serves only HTTPS with a client certificate for an admin identity
// (spiffe://TD/admin/NAME) that the CA still knows and has not revoked.
//
//	d, err := dashboard.New(dashboard.Config{CA: cl, Identity: admin})
//	ln, err := dashboard.Listen("127.0.0.1:8080", nil)
//	err = d.Serve(ctx, ln)
package dashboard

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/loopback"
)

//go:embed templates/*.html static/*
var assets embed.FS

// CA is what the dashboard asks of the CA's admin API; *client.Client
// provides it.
type CA interface {
	Summary(ctx context.Context) (*api.Summary, error)
	CertificatesQuery(ctx context.Context, q api.CertificateQuery) (*api.CertificateList, error)
	Certificate(ctx context.Context, serial string) (*api.CertificateInfo, error)
	Revoke(ctx context.Context, req api.RevokeRequest) (*api.RevokeResponse, error)
	ListEntries(ctx context.Context) (*api.EntryList, error)
	ListTokens(ctx context.Context) (*api.TokenList, error)
	Health(ctx context.Context) (*client.Health, error)
	CRL(ctx context.Context, issuer *x509.Certificate) (*x509.RevocationList, error)
	LogCheckpoint(ctx context.Context) (checkpoint []byte, verifierKey string, err error)
	ListFederations(ctx context.Context) (*api.FederationList, error)
	ListPartners(ctx context.Context) (*api.PartnerList, error)
	LogFindings(ctx context.Context, limit int) (*api.FindingList, error)
	VoidToken(ctx context.Context, id string) error
	DeleteEntry(ctx context.Context, id string) error
	EndPartner(ctx context.Context, name string) (*api.RevokeResponse, error)
}

// Config builds a Dashboard. CA and Identity are required.
type Config struct {
	// CA answers the pages' questions with the operator's admin identity.
	CA CA
	// Identity is the operator's admin identity: its trust domain, its
	// intermediate (whose CRL is checked) and its roots.
	Identity *identity.Identity
	// LogKey is the issuance log's verifier key as `ca init` wrote it
	// (log.pub); empty checks the checkpoint against the key the CA serves,
	// and says so.
	LogKey string
	// TLS, when set, is the identity the dashboard serves HTTPS with; it
	// then requires a client certificate for an admin identity of the same
	// trust domain. Required for an address beyond loopback.
	TLS *identity.Identity
	// Proxies are the proxies whose migration reports (who still connects
	// without a certificate) the migration page gathers.
	Proxies []Proxy
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Log receives one line per refused or failed request; nil discards.
	Log *slog.Logger
}

// Dashboard serves the operator's web UI.
type Dashboard struct {
	cfg     Config
	log     *slog.Logger
	pages   pages
	csrfKey [32]byte
	handler http.Handler
	// proxies reads the proxies' migration reports.
	proxies *http.Client
	// acts are the actions beyond revoking one certificate, by kind.
	acts map[string]action
}

// New checks cfg and builds a Dashboard; it starts nothing.
func New(cfg Config) (*Dashboard, error) {
	if cfg.CA == nil {
		return nil, errors.New("dashboard: no CA client")
	}
	if cfg.Identity == nil || len(cfg.Identity.Chain) < 2 {
		return nil, errors.New("--identity-dir: the admin identity must hold its certificate and the CA's intermediate (cert.pem as `ca init` wrote it)")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	d := &Dashboard{cfg: cfg, log: cfg.Log}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if _, err := rand.Read(d.csrfKey[:]); err != nil {
		return nil, fmt.Errorf("dashboard: CSRF key: %w", err)
	}
	p, err := parsePages()
	if err != nil {
		return nil, err
	}
	if d.proxies, err = newProxyClient(cfg); err != nil {
		return nil, err
	}
	d.pages = p
	d.acts = d.actions()
	d.handler = d.routes()
	return d, nil
}

// Handler returns the dashboard's HTTP handler, with every guard (headers,
// host, session, CSRF, and with TLS the client's admin identity).
func (d *Dashboard) Handler() http.Handler { return d.handler }

func (d *Dashboard) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", d.overview)
	mux.HandleFunc("GET /certificates", d.certificates)
	mux.HandleFunc("GET /certificates/{serial}", d.certificate)
	mux.HandleFunc("POST /certificates/{serial}/revoke", d.revoke)
	mux.HandleFunc("GET /identities", d.identities)
	mux.HandleFunc("GET /nodes", d.nodes)
	mux.HandleFunc("GET /log", d.issuanceLog)
	mux.HandleFunc("GET /federation", d.federation)
	mux.HandleFunc("GET /migration", d.migration)
	mux.HandleFunc("GET /actions/{kind}", d.confirmAction)
	mux.HandleFunc("POST /actions/{kind}", d.doAction)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		d.fail(w, r, http.StatusNotFound, "No such page: "+r.URL.Path)
	})
	return d.guard(mux)
}

// NotLoopbackError is an address beyond loopback for a dashboard without
// TLS: anyone who can reach it would act with the operator's admin identity.
type NotLoopbackError struct{ Addr string }

// Error says why and what to do.
func (e *NotLoopbackError) Error() string {
	return fmt.Sprintf("--listen %s is not a loopback address: a dashboard reachable from other machines acts with your admin identity, so it needs mTLS; pass --tls-identity-dir DIR (an identity the dashboard serves HTTPS with, browsers then need an admin client certificate) or listen on 127.0.0.1", e.Addr)
}

// Listen binds addr, refusing an address beyond loopback unless tlsID (the
// identity HTTPS is served with) is given.
func Listen(addr string, tlsID *identity.Identity) (net.Listener, error) {
	if tlsID == nil && !loopback.Is(addr) {
		return nil, &NotLoopbackError{Addr: addr}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--listen %s: %w", addr, err)
	}
	return ln, nil
}

// Serve answers on ln until ctx is done. Without Config.TLS it refuses a
// listener beyond loopback (fail closed, whatever bound it).
func (d *Dashboard) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           d.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelDebug),
	}
	if d.cfg.TLS == nil {
		if !loopback.Is(ln.Addr().String()) {
			return &NotLoopbackError{Addr: ln.Addr().String()}
		}
	} else {
		hs.TLSConfig = d.tlsConfig()
		ln = tls.NewListener(ln, hs.TLSConfig)
	}
	// Shut down gracefully when ctx ends, and return only once done.
	shutdown := make(chan error, 1)
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shutdown <- hs.Shutdown(sctx)
	})
	err := hs.Serve(ln)
	if !stop() {
		return <-shutdown
	}
	return err
}
