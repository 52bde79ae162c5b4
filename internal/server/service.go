package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/policy"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/revocation/publish"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/translog"
)

// DefaultListen is where the CA service listens unless told otherwise.
const DefaultListen = "127.0.0.1:8443"

// Options configure a Service. Zero values are the documented defaults.
type Options struct {
	// Dir is the CA directory made by `mutual ca init` (required).
	Dir string
	// Passphrase decrypts the intermediate key (required).
	Passphrase []byte
	// Listen is the API address; empty means DefaultListen. Port 0 picks a free port.
	Listen string
	// StoreURL is "sqlite:PATH" or "postgres://..."; empty means sqlite:DIR/mutual.db.
	StoreURL string
	// MetricsListen, when set, serves Prometheus metrics there.
	MetricsListen string
	// URLs are the addresses clients reach the CA at, written into join
	// tokens; empty means https://LISTEN (or the first SAN of the server
	// certificate when listening on all interfaces).
	URLs []string
	// HTTPListen, when set, serves the CRL and OCSP over plain HTTP there
	// (signed data; clients such as openssl expect http:// URLs), and
	// certificates point at it.
	HTTPListen string
	// HTTPURL is the public base URL of HTTPListen; empty means
	// http://HTTPListen.
	HTTPURL string
	// Log receives structured events; nil discards.
	Log *slog.Logger
	// FeedMaxStreams bounds the revocation feed streams open at once; zero
	// means publish.DefaultMaxStreams. Beyond it a stream is refused
	// with 503.
	FeedMaxStreams int
	// FeedMaxStreamsPerIdentity bounds the feed streams one SPIFFE ID holds
	// open at once; zero means publish.DefaultMaxStreamsPerPeer. Beyond
	// it a stream is refused with 429.
	FeedMaxStreamsPerIdentity int
}

// Service is a running CA: store, authority, API and metrics listeners.
type Service struct {
	Authority *ca.Authority
	Server    *Server
	Store     *store.DB
	// URL is the first address in Authority.URLs.
	URL string
	// Dir is the CA directory.
	Dir string

	log       *slog.Logger
	ln, mln   net.Listener
	hln       net.Listener
	crl       *publish.CRL
	tlog      *translog.Server
	ocsp      *publish.Responder
	hub       *publish.Hub
	caDir     *pki.CA
	serverTLS atomic.Pointer[tls.Certificate]
}

// Open loads the CA, opens the store, binds the listeners and imports the
// certificates `ca init` made. It starts no goroutine: call Run.
func Open(ctx context.Context, o Options) (*Service, error) {
	if o.Dir == "" {
		return nil, errors.New("--dir: no CA directory given")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, err := pki.LoadCA(o.Dir, o.Passphrase)
	if err != nil {
		return nil, err
	}
	if o.StoreURL == "" {
		o.StoreURL = "sqlite:" + filepath.Join(o.Dir, pki.DatabaseFile)
	}
	if o.Listen == "" {
		o.Listen = DefaultListen
	}
	db, err := openStore(ctx, o.Dir, o.StoreURL)
	if err != nil {
		return nil, err
	}
	s := &Service{Store: db, Dir: o.Dir, log: log, caDir: c}
	fail := func(err error) (*Service, error) {
		s.Close()
		return nil, err
	}
	s.Authority = &ca.Authority{
		Issuer: c.Issuer,
		Roots:  c.Roots,
		Policy: &policy.Policy{
			TrustDomain: c.TrustDomain,
			DefaultTTL:  time.Duration(c.Config.Policy.DefaultTTL),
			MaxTTL:      time.Duration(c.Config.Policy.MaxTTL),
			MaxTokenTTL: time.Duration(c.Config.Policy.MaxTokenTTL),
		},
		Store: db,
		Log:   log,
	}
	if err := s.loadServerCert(ctx); err != nil {
		return fail(err)
	}
	for _, d := range []string{pki.AdminDir, pki.ServerDir} {
		id, err := identity.Load(filepath.Join(o.Dir, d))
		if err != nil {
			log.Warn("not importing identity", "dir", d, "error", err.Error())
			continue
		}
		if err := s.Authority.Import(ctx, id.Leaf(), translog.CARequester("init")); err != nil {
			return fail(fmt.Errorf("import %s: %w", d, err))
		}
	}
	s.ln, err = net.Listen("tcp", o.Listen)
	if err != nil {
		return fail(fmt.Errorf("--listen %s: %w", o.Listen, err))
	}
	if o.MetricsListen != "" {
		s.mln, err = net.Listen("tcp", o.MetricsListen)
		if err != nil {
			return fail(fmt.Errorf("--metrics %s: %w", o.MetricsListen, err))
		}
	}
	if len(o.URLs) == 0 {
		o.URLs = []string{s.defaultURL()}
	}
	s.Authority.URLs = o.URLs
	s.URL = o.URLs[0]

	// Revocation: CRL, OCSP, push feed; leaves point at the CRL and OCSP.
	s.crl = &publish.CRL{Issuer: c.Issuer, Store: db}
	if s.ocsp, err = publish.NewResponder(c.Issuer, db, nil); err != nil {
		return fail(err)
	}
	if o.FeedMaxStreams < 0 || o.FeedMaxStreamsPerIdentity < 0 {
		return fail(errors.New("--feed-max-streams and --feed-max-streams-per-identity must be positive (0 means the default)"))
	}
	s.hub = &publish.Hub{Store: db, Log: log, OnEvent: func(e revocation.Event) { s.ocsp.Invalidate(e.Serial) },
		MaxStreams: o.FeedMaxStreams, MaxStreamsPerPeer: o.FeedMaxStreamsPerIdentity}
	revBase := s.URL
	if o.HTTPListen != "" {
		if s.hln, err = net.Listen("tcp", o.HTTPListen); err != nil {
			return fail(fmt.Errorf("--http-listen %s: %w", o.HTTPListen, err))
		}
		revBase = o.HTTPURL
		if revBase == "" {
			revBase = "http://" + s.hln.Addr().String()
		}
	}
	revBase = strings.TrimRight(revBase, "/")
	s.Authority.CRLURL = revBase + "/crl/" + revocation.IssuerKeyID(c.Issuer.Cert) + ".crl"
	s.Authority.OCSPURL = revBase + "/ocsp"
	s.Authority.OnRevoke = func(serial string) {
		s.ocsp.Invalidate(serial)
		s.hub.Poke()
	}
	// Let the operator's tools find this CA without --server: on the
	// first start only. The file is the operator's once it exists (they
	// may point it at a load balancer or at several replicas); a replica
	// started with another --url must not rewrite it.
	adminDir := filepath.Join(o.Dir, pki.AdminDir)
	known, err := client.LoadCAURLs(adminDir)
	switch {
	case err != nil:
		log.Warn("cannot read the CA addresses recorded for the admin identity; left as is", "file", filepath.Join(adminDir, client.ServersFile), "error", err.Error())
	case known == nil:
		if err := client.SaveCAURLs(adminDir, o.URLs); err != nil {
			log.Warn("cannot record the CA's address for the admin identity", "error", err.Error())
		}
	case !slices.Contains(known, s.URL):
		log.Info("the admin identity's CA addresses do not include this server's; left as the operator wrote them (admin commands take --server)",
			"file", filepath.Join(adminDir, client.ServersFile), "recorded", strings.Join(known, ","), "url", s.URL)
	}
	signer, err := translog.LoadOrCreateKey(o.Dir, c.TrustDomain.Name(), o.Passphrase, 0)
	if err != nil {
		return fail(fmt.Errorf("the issuance log's key: %w", err))
	}
	s.tlog = &translog.Server{Store: db, Signer: signer, Log: log}
	s.Server = New(Config{
		Authority:   s.Authority,
		Certificate: func() *tls.Certificate { return s.serverTLS.Load() },
		Store:       db,
		Log:         log,
		CRL:         s.crl,
		OCSP:        s.ocsp,
		Hub:         s.hub,
		IssuanceLog: s.tlog,
	})
	return s, nil
}

func (s *Service) defaultURL() string {
	addr := s.ln.Addr().(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "localhost"
		leaf := s.serverTLS.Load().Leaf
		if len(leaf.DNSNames) > 0 {
			host = leaf.DNSNames[0]
		} else if len(leaf.IPAddresses) > 0 {
			host = leaf.IPAddresses[0].String()
		}
	}
	return "https://" + net.JoinHostPort(host, fmt.Sprint(addr.Port))
}

// Addr is the API listener's address.
func (s *Service) Addr() net.Addr { return s.ln.Addr() }

// HTTPAddr is the plain-HTTP CRL/OCSP listener's address, or nil.
func (s *Service) HTTPAddr() net.Addr {
	if s.hln == nil {
		return nil
	}
	return s.hln.Addr()
}

// MetricsAddr is the metrics listener's address, or nil.
func (s *Service) MetricsAddr() net.Addr {
	if s.mln == nil {
		return nil
	}
	return s.mln.Addr()
}

// loadServerCert reads DIR/server and reissues it when a third of its life
// or less is left. The chain served is leaf, intermediate, root.
func (s *Service) loadServerCert(ctx context.Context) error {
	dir := filepath.Join(s.Dir, pki.ServerDir)
	id, err := identity.Load(dir)
	if err != nil {
		return fmt.Errorf("the CA service's TLS identity: %w", err)
	}
	leaf := id.Leaf()
	now := time.Now()
	if left := leaf.NotAfter.Sub(now); left < leaf.NotAfter.Sub(leaf.NotBefore)/3 {
		key, err := pki.GenerateKey(s.caDir.Config.KeyType, nil)
		if err != nil {
			return err
		}
		cert, err := s.caDir.Issuer.Issue(pki.Leaf{ID: id.ID, PublicKey: key.Public(), DNSNames: leaf.DNSNames,
			IPAddresses: leaf.IPAddresses, TTL: pki.ServerTTL, Now: now})
		if err != nil {
			return fmt.Errorf("renew the CA service's TLS certificate: %w", err)
		}
		id = &identity.Identity{ID: id.ID, Chain: []*x509.Certificate{cert, s.caDir.Issuer.Cert}, Key: key, Roots: s.caDir.Roots}
		if err := id.Save(dir); err != nil {
			return fmt.Errorf("renew the CA service's TLS certificate: %w", err)
		}
		if err := s.Authority.Import(ctx, cert, translog.CARequester("server")); err != nil {
			return err
		}
		s.log.Info("renewed the CA service's TLS certificate", "serial", pki.FormatSerial(cert.SerialNumber), "not_after", cert.NotAfter)
	}
	tc := id.TLSCertificate()
	tc.Certificate = [][]byte{id.Chain[0].Raw, s.caDir.Issuer.Cert.Raw}
	for _, r := range s.caDir.Roots {
		tc.Certificate = append(tc.Certificate, r.Raw)
	}
	s.serverTLS.Store(&tc)
	return nil
}

// Run serves the API (and metrics) until ctx is done, renewing the service's
// own TLS certificate as it ages. It returns after a graceful shutdown.
func (s *Service) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 5)
	n := 2
	go func() { errc <- s.Server.Serve(ctx, s.ln) }()
	go func() { errc <- s.hub.Run(ctx) }()
	n++
	go func() { errc <- s.tlog.Run(ctx) }()
	if s.hln != nil {
		n++
		go func() {
			errc <- serve(ctx, &http.Server{Handler: s.Server.RevocationHandler(), ReadHeaderTimeout: 10 * time.Second}, s.hln)
		}()
	}
	if s.mln != nil {
		n++
		go func() { errc <- s.Server.ServeMetrics(ctx, s.mln) }()
	}
	n++
	go func() { errc <- s.watchStore(ctx) }()
	n++
	go func() {
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				errc <- nil
				return
			case <-t.C:
				if err := s.loadServerCert(ctx); err != nil {
					s.log.Error("CA service TLS certificate", "error", err.Error())
				}
				if err := s.ocsp.Maintain(); err != nil {
					s.log.Error("OCSP responder certificate", "error", err.Error())
				}
			}
		}
	}()
	var first error
	for i := 0; i < n; i++ {
		err := <-errc
		if err != nil && !errors.Is(err, http.ErrServerClosed) && first == nil {
			first = err
		}
		cancel()
	}
	return first
}

// watchStore records the log's latest checkpoint beside the keys as it
// grows, and says once, loudly, when the store is found damaged, deleted
// or replaced (health checks then answer 503 with the same message).
func (s *Service) watchStore(ctx context.Context) error {
	w, err := readWitness(s.Dir)
	if err != nil {
		s.log.Error("issuance log checkpoint", "error", err.Error())
	}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	warned := false
	save := func(ctx context.Context) {
		if err := s.Store.Damaged(); err != nil {
			if !warned {
				s.log.Error("the store is damaged: this CA cannot issue; stop it and restore the store from backup", "error", err.Error())
				warned = true
			}
			return
		}
		next, err := saveWitness(ctx, s.Dir, s.Store, w)
		if err != nil {
			s.log.Warn("cannot record the issuance log's checkpoint beside the keys", "error", err.Error())
			return
		}
		w = next
	}
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			save(fctx)
			cancel()
			return nil
		case <-t.C:
			save(ctx)
		}
	}
}

// Close releases the listeners and the store.
func (s *Service) Close() error {
	if s.ln != nil {
		s.ln.Close()
	}
	if s.mln != nil {
		s.mln.Close()
	}
	if s.hln != nil {
		s.hln.Close()
	}
	return s.Store.Close()
}

// IssueAdmin issues an operator identity spiffe://TD/admin/NAME with the
// intermediate key of the CA in dir and records it in the CA's store
// (storeURL, or the default SQLite file), so that it authenticates and can
// be revoked like any other certificate.
func IssueAdmin(ctx context.Context, dir string, passphrase []byte, storeURL, name string, ttl time.Duration) (*identity.Identity, error) {
	c, err := pki.LoadCA(dir, passphrase)
	if err != nil {
		return nil, err
	}
	id, err := pki.AdminID(c.TrustDomain, name)
	if err != nil {
		return nil, fmt.Errorf("--name %q: %w", name, err)
	}
	if storeURL == "" {
		storeURL = "sqlite:" + filepath.Join(dir, pki.DatabaseFile)
	}
	db, err := openStore(ctx, dir, storeURL)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	key, err := pki.GenerateKey(c.Config.KeyType, nil)
	if err != nil {
		return nil, err
	}
	cert, err := c.Issuer.Issue(pki.Leaf{ID: id, PublicKey: key.Public(), TTL: ttl, Now: time.Now()})
	if err != nil {
		return nil, err
	}
	a := &ca.Authority{Issuer: c.Issuer, Roots: c.Roots, Store: db}
	if err := a.Import(ctx, cert, translog.CARequester("admin")); err != nil {
		return nil, err
	}
	return &identity.Identity{ID: id, Chain: []*x509.Certificate{cert, c.Issuer.Cert}, Key: key, Roots: c.Roots}, nil
}
