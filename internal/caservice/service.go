// Package caservice assembles and supervises a running CA service: it opens
// the store (refusing one that does not hold this CA's issuance log), builds
// the Authority, the issuance log, the revocation publisher (CRL, OCSP, push
// feed) and the HTTPS edge of package server, binds the listeners, and runs
// them all under one owner until its context ends.
//
//	svc, err := caservice.Open(ctx, caservice.Options{Dir: dir, Passphrase: pass})
//	if err != nil { ... }
//	defer svc.Close()
//	return svc.Run(ctx)
//
// It also holds the offline path that issues an operator identity with the
// CA's key (IssueAdmin), which needs the same store but no service.
package caservice

import (
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/federation"
	"github.com/mutual-tls/mutual/internal/jwtauthority"
	"github.com/mutual-tls/mutual/internal/keyref"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/policy"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/revocation/publish"
	"github.com/mutual-tls/mutual/internal/server"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/translog"
	"github.com/mutual-tls/mutual/internal/watch"
)

// DefaultListen is where the CA service listens unless told otherwise.
const DefaultListen = "127.0.0.1:8443"

// Options configure a Service. Zero values are the documented defaults.
type Options struct {
	// Dir is the CA directory made by `mutual ca init` (required).
	Dir string
	// Passphrase decrypts the CA key files: the log key, and the
	// intermediate key unless ca.json names it in a token (required).
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
	// Reload, when set, makes the service re-read the CA directory at once
	// each time it fires (SIGHUP); it also does within ReloadInterval of a
	// change to ca.json or the intermediate (Service.Reload).
	Reload *watch.Trigger
	// ReloadInterval is how often the CA directory is checked for a
	// rotation; zero means watch.DefaultInterval.
	ReloadInterval time.Duration
	// FederationClock, when set, drives the federated bundles' refresh and
	// the check for partnerships past their end (tests step it); nil means
	// the system's.
	FederationClock federation.Clock
}

// withDefaults checks o and fills in the documented defaults.
func (o Options) withDefaults() (Options, error) {
	if o.Dir == "" {
		return o, errors.New("--dir: no CA directory given")
	}
	if o.FeedMaxStreams < 0 || o.FeedMaxStreamsPerIdentity < 0 {
		return o, errors.New("--feed-max-streams and --feed-max-streams-per-identity must be positive (0 means the default)")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.StoreURL == "" {
		o.StoreURL = defaultStoreURL(o.Dir)
	}
	if o.Listen == "" {
		o.Listen = DefaultListen
	}
	return o, nil
}

func defaultStoreURL(dir string) string { return "sqlite:" + filepath.Join(dir, pki.DatabaseFile) }

// Service is a CA service ready to run: store, authority, issuance log,
// revocation publisher, API and metrics listeners.
type Service struct {
	// Authority issues, renews and revokes.
	Authority *ca.Authority
	// Server is the HTTPS edge.
	Server *server.Server
	// Store holds the CA's state.
	Store *store.DB
	// URL is the first address in Authority.URLs.
	URL string
	// Dir is the CA directory.
	Dir string

	log       *slog.Logger
	ln, mln   net.Listener
	hln       net.Listener
	tlog      *translog.Server
	ocsp      liveOCSP
	ocspKey   crypto.Signer // nil: in-memory responder keys
	hub       *publish.Hub
	caDir     *pki.CA
	keys      *keyref.Keyring
	serverTLS atomic.Pointer[tls.Certificate]
	fed       *federation.Refresher
	clock     federation.Clock
	jwtKeys   *jwtauthority.Authority

	// reloadMu serialises Reload and the hourly maintenance, which both
	// read caDir and may reissue the TLS certificate.
	reloadMu       sync.Mutex
	passphrase     []byte
	caPrint        [32]byte
	crlBase        string
	oldKeys        []*keyref.Keyring
	reloadTrigger  *watch.Trigger
	reloadInterval time.Duration
}

// Open loads the CA, opens the store, binds the listeners and imports the
// certificates `ca init` made. It starts no goroutine: call Run, then Close.
func Open(ctx context.Context, o Options) (*Service, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	fp, err := caFingerprint(o.Dir)
	if err != nil {
		return nil, err
	}
	c, keys, err := loadCA(ctx, o.Dir, o.Passphrase)
	if err != nil {
		return nil, err
	}
	db, err := openStore(ctx, o.Dir, o.StoreURL)
	if err != nil {
		keys.Close()
		return nil, err
	}
	s := &Service{Store: db, Dir: o.Dir, log: o.Log, caDir: c, keys: keys, Authority: newAuthority(c, db, o.Log),
		passphrase: o.Passphrase, caPrint: fp, reloadTrigger: o.Reload, reloadInterval: o.ReloadInterval}
	if err := rotationChains(s.Authority, c); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.assemble(ctx, o); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// assemble does the steps of Open that run with the store open.
func (s *Service) assemble(ctx context.Context, o Options) error {
	if err := s.reissueAfterRotation(ctx); err != nil {
		return err
	}
	if err := s.loadServerCert(ctx); err != nil {
		return err
	}
	if err := s.importInitIdentities(ctx); err != nil {
		return err
	}
	if err := s.listen(o); err != nil {
		return err
	}
	if len(o.URLs) == 0 {
		o.URLs = []string{s.defaultURL()}
	}
	s.Authority.URLs = o.URLs
	s.URL = o.URLs[0]
	if err := s.openOCSPKey(ctx); err != nil {
		return err
	}
	crl, err := s.publishRevocations(o)
	if err != nil {
		return err
	}
	s.recordAdminURLs(o.URLs)
	signer, err := s.logSigner(ctx, o.Passphrase)
	if err != nil {
		return err
	}
	s.tlog = &translog.Server{Store: s.Store, Signer: signer, Log: s.log}
	bundle, err := s.federate(ctx, o)
	if err != nil {
		return err
	}
	jwtIssuer, err := s.openJWT(ctx, o)
	if err != nil {
		return err
	}
	s.Server = server.New(server.Config{
		Authority:     s.Authority,
		TrustDomain:   s.caDir.TrustDomain,
		Roots:         s.caDir.Roots,
		IssuerCert:    s.caDir.Issuer.Cert,
		Certificate:   func() *tls.Certificate { return s.serverTLS.Load() },
		Store:         s.Store,
		Log:           s.log,
		CRL:           crl,
		RetiredCRLs:   retiredCRLs(s.caDir, s.Store),
		Intermediates: s.Authority.CrossSigned,
		OCSP:          &s.ocsp,
		Hub:           s.hub,
		IssuanceLog:   s.tlog,
		SPIFFEBundle:  func() []byte { return bundle },
		Federation:    s.Authority,
		Partners:      s.Authority,
		JWT:           jwtIssuer,
		Findings:      s.Store,
		Tokens:        s.Store,
	})
	return nil
}

// newAuthority is the CA's Authority under the policy of its ca.json.
func newAuthority(c *pki.CA, db *store.DB, log *slog.Logger) *ca.Authority {
	return &ca.Authority{
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
}

// importInitIdentities records the admin and server certificates `ca init`
// made, so that they authenticate and can be revoked like any other.
func (s *Service) importInitIdentities(ctx context.Context) error {
	for _, d := range []string{pki.AdminDir, pki.ServerDir} {
		id, err := identity.Load(filepath.Join(s.Dir, d))
		if err != nil {
			s.log.Warn("not importing identity", "dir", d, "error", err.Error())
			continue
		}
		if !s.signedByCurrent(id.Leaf()) {
			continue // issued before an intermediate rotation, and imported then
		}
		if err := s.Authority.Import(ctx, id.Leaf(), translog.CARequester("init")); err != nil {
			return fmt.Errorf("import %s: %w", d, err)
		}
	}
	return nil
}

// listen binds the API listener and, when asked for, the metrics and
// plain-HTTP revocation listeners.
func (s *Service) listen(o Options) error {
	var err error
	if s.ln, err = net.Listen("tcp", o.Listen); err != nil {
		return fmt.Errorf("--listen %s: %w", o.Listen, err)
	}
	if o.MetricsListen != "" {
		if s.mln, err = net.Listen("tcp", o.MetricsListen); err != nil {
			return fmt.Errorf("--metrics %s: %w", o.MetricsListen, err)
		}
	}
	if o.HTTPListen != "" {
		if s.hln, err = net.Listen("tcp", o.HTTPListen); err != nil {
			return fmt.Errorf("--http-listen %s: %w", o.HTTPListen, err)
		}
	}
	return nil
}

// publishRevocations builds the CRL, the OCSP responder and the push feed,
// and points the leaves the Authority issues at the CRL and OCSP.
func (s *Service) publishRevocations(o Options) (*publish.CRL, error) {
	c, db := s.caDir, s.Store
	crl := &publish.CRL{Issuer: c.Issuer, Store: db}
	ocsp, err := publish.NewResponders(append([]*pki.Issuer{c.Issuer}, c.Retired...), s.ocspKey, db)
	if err != nil {
		return nil, err
	}
	s.ocsp.rs.Store(&ocsp)
	s.hub = &publish.Hub{Store: db, Log: s.log, OnEvent: func(e revocation.Event) { s.ocsp.load().Invalidate(e.Serial) },
		MaxStreams: o.FeedMaxStreams, MaxStreamsPerPeer: o.FeedMaxStreamsPerIdentity}
	base := s.URL
	if s.hln != nil {
		base = o.HTTPURL
		if base == "" {
			base = "http://" + s.hln.Addr().String()
		}
	}
	base = strings.TrimRight(base, "/")
	s.crlBase = base + "/crl"
	s.Authority.CRLURL = base + "/crl/" + revocation.IssuerKeyID(c.Issuer.Cert) + ".crl"
	s.Authority.OCSPURL = base + "/ocsp"
	s.Authority.OnRevoke = func(serial string) {
		s.ocsp.load().Invalidate(serial)
		s.hub.Poke()
	}
	return crl, nil
}

// recordAdminURLs lets the operator's tools find this CA without --server,
// on the first start only. The file is the operator's once it exists (they
// may point it at a load balancer or at several replicas); a replica started
// with another --url must not rewrite it.
func (s *Service) recordAdminURLs(urls []string) {
	adminDir := filepath.Join(s.Dir, pki.AdminDir)
	known, err := client.LoadCAURLs(adminDir)
	switch {
	case err != nil:
		s.log.Warn("cannot read the CA addresses recorded for the admin identity; left as is", "file", filepath.Join(adminDir, client.ServersFile), "error", err.Error())
	case known == nil:
		if err := client.SaveCAURLs(adminDir, urls); err != nil {
			s.log.Warn("cannot record the CA's address for the admin identity", "error", err.Error())
		}
	case !slices.Contains(known, s.URL):
		s.log.Info("the admin identity's CA addresses do not include this server's; left as the operator wrote them (admin commands take --server)",
			"file", filepath.Join(adminDir, client.ServersFile), "recorded", strings.Join(known, ","), "url", s.URL)
	}
}

// defaultURL is https://LISTEN, naming the server certificate's first SAN
// when listening on all interfaces.
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

// Close releases the listeners, the store and the CA's keys (a token's
// sessions). Call it after Run returns.
func (s *Service) Close() error {
	for _, ln := range []net.Listener{s.ln, s.mln, s.hln} {
		if ln != nil {
			ln.Close()
		}
	}
	errs := []error{s.Store.Close(), s.keys.Close()}
	for _, k := range s.oldKeys {
		errs = append(errs, k.Close())
	}
	return errors.Join(errs...)
}
