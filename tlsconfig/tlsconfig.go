// Package tlsconfig builds crypto/tls configurations for mutual TLS between
// SPIFFE identities: the certificate comes from a rotating source, peers are
// verified against a trust bundle and authorized by SPIFFE ID.
//
// Sources are go-spiffe's interfaces, so the same code runs on an identity
// directory (identity.DirSource), on mutual's agent, or on any SPIFFE
// Workload API (go-spiffe's workloadapi.X509Source):
//
//	src, _ := identity.NewDirSource("/etc/mutual/web")
//	go src.Run(ctx, 0, nil)
//	allow, err := tlsconfig.AuthorizeMatch("spiffe://example.org/ns/prod/*")
//	if err != nil { ... }
//	srv := &http.Server{TLSConfig: tlsconfig.ServerConfig(src, src, allow)}
//
// Every verification failure is a *PeerError whose Reason says what was
// wrong with the peer's certificate (a stable code; its String, in words). No configuration made here
// skips verification: clients verify the server's chain against the bundle
// and authorize its SPIFFE ID, as the X.509-SVID specification says, and
// check a DNS or IP name only when asked to (ClientConfig's serverName).
package tlsconfig

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	spiffetls "github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/pki"
)

// Reason names why a peer certificate was refused. Its value is a stable
// code without spaces (such as "unknown_authority"), fit for a metric label
// or a switch in another program; String gives the words for people
// ("unknown authority").
type Reason string

// Reasons for refusing a peer.
const (
	ReasonNoCertificate    Reason = "no_certificate"
	ReasonUnknownAuthority Reason = "unknown_authority"
	ReasonExpired          Reason = "expired"
	ReasonNotYetValid      Reason = "not_yet_valid"
	ReasonNoSPIFFEID       Reason = "no_spiffe_id"
	ReasonWrongUsage       Reason = "wrong_key_usage"
	ReasonNotAuthorized    Reason = "not_authorized"
	ReasonRevoked          Reason = "revoked"
	ReasonBadCertificate   Reason = "bad_certificate"
	// ReasonNameMismatch: a client asked for a server name (DNS or IP)
	// and the server's certificate does not carry it.
	ReasonNameMismatch Reason = "name_mismatch"
	// ReasonRevocationUnknown: the revocation status could not be known
	// (no current CRL and no live feed), and the check fails closed.
	ReasonRevocationUnknown Reason = "revocation_unknown"
)

// reasonWords are the Reasons in words.
var reasonWords = map[Reason]string{
	ReasonNoCertificate:     "no certificate",
	ReasonUnknownAuthority:  "unknown authority",
	ReasonExpired:           "expired",
	ReasonNotYetValid:       "not yet valid",
	ReasonNoSPIFFEID:        "no SPIFFE ID",
	ReasonWrongUsage:        "wrong key usage",
	ReasonNotAuthorized:     "not authorized",
	ReasonRevoked:           "revoked",
	ReasonBadCertificate:    "bad certificate",
	ReasonNameMismatch:      "name mismatch",
	ReasonRevocationUnknown: "revocation status unknown",
}

// String returns the reason in words, as logs and messages print it; a
// Reason this package does not define is returned as it is.
func (r Reason) String() string {
	if w, ok := reasonWords[r]; ok {
		return w
	}
	return string(r)
}

// PeerError is a refused peer certificate, with the evidence.
type PeerError struct {
	Reason Reason
	// ID is the peer's SPIFFE ID when it could be read.
	ID spiffeid.ID
	// Cert is the peer's leaf certificate, when there was one.
	Cert *x509.Certificate
	Err  error
}

func (e *PeerError) Error() string {
	who := "the peer"
	if !e.ID.IsZero() {
		who = e.ID.String()
	}
	switch e.Reason {
	case ReasonNoCertificate:
		return "the peer presented no certificate"
	case ReasonExpired:
		return fmt.Sprintf("the certificate of %s expired at %s", who, e.Cert.NotAfter.UTC().Format(time.RFC3339))
	case ReasonNotYetValid:
		return fmt.Sprintf("the certificate of %s is not valid before %s (is a clock wrong?)", who, e.Cert.NotBefore.UTC().Format(time.RFC3339))
	case ReasonNotAuthorized:
		if e.Err != nil && strings.Contains(e.Err.Error(), who) {
			return e.Err.Error()
		}
		return fmt.Sprintf("%s is not authorized: %v", who, e.Err)
	}
	if e.Err != nil {
		return fmt.Sprintf("the certificate of %s: %s: %v", who, e.Reason, e.Err)
	}
	return fmt.Sprintf("the certificate of %s: %s", who, e.Reason)
}

// Unwrap returns the cause.
func (e *PeerError) Unwrap() error { return e.Err }

// Authorizer decides whether a verified peer may connect. chain is the
// verified chain, leaf first.
//
// go-spiffe's spiffetls/tlsconfig.Authorizer receives all verified chains
// instead of one; SPIFFE and FromSPIFFE convert between the two, so one
// authorizer serves both packages.
type Authorizer func(id spiffeid.ID, chain []*x509.Certificate) error

// SPIFFE returns a as a go-spiffe authorizer (for tlsconfig.MTLSServerConfig
// and its kind), deciding on the first verified chain.
func (a Authorizer) SPIFFE() spiffetls.Authorizer {
	return func(id spiffeid.ID, chains [][]*x509.Certificate) error {
		var chain []*x509.Certificate
		if len(chains) > 0 {
			chain = chains[0]
		}
		return a(id, chain)
	}
}

// FromSPIFFE returns a go-spiffe authorizer (such as its AuthorizeOneOf) as
// an Authorizer; it is given the one verified chain this package passes.
func FromSPIFFE(a spiffetls.Authorizer) Authorizer {
	return func(id spiffeid.ID, chain []*x509.Certificate) error {
		return a(id, [][]*x509.Certificate{chain})
	}
}

// AuthorizeAny allows every peer whose certificate verifies.
func AuthorizeAny() Authorizer {
	return func(spiffeid.ID, []*x509.Certificate) error { return nil }
}

// AuthorizeID allows the listed identities only.
func AuthorizeID(ids ...spiffeid.ID) Authorizer {
	return func(id spiffeid.ID, _ []*x509.Certificate) error {
		for _, want := range ids {
			if id == want {
				return nil
			}
		}
		names := make([]string, len(ids))
		for i, want := range ids {
			names[i] = want.String()
		}
		return fmt.Errorf("%s is not authorized: only %s may connect", id, strings.Join(names, ", "))
	}
}

// AuthorizeMatch allows identities that match one of patterns, written as
// in mutual's proxy policies: a whole path segment, "*" for exactly one
// segment, or a final "**" for one or more, such as
// "spiffe://example.org/ns/prod/*". A pattern that cannot be read is an
// error naming it.
func AuthorizeMatch(patterns ...string) (Authorizer, error) {
	if len(patterns) == 0 {
		return nil, errors.New("tlsconfig: AuthorizeMatch needs at least one pattern (spiffe://TD/path, * for one segment, ** at the end for any depth)")
	}
	ps := make([]authz.Pattern, len(patterns))
	for i, s := range patterns {
		p, err := authz.ParsePattern(s)
		if err != nil {
			return nil, fmt.Errorf("tlsconfig: %w", err)
		}
		ps[i] = p
	}
	return func(id spiffeid.ID, _ []*x509.Certificate) error {
		for _, p := range ps {
			if p.Match(id) {
				return nil
			}
		}
		return fmt.Errorf("%s is not authorized: it matches none of %s", id, strings.Join(patterns, ", "))
	}, nil
}

// AuthorizeMemberOf allows any identity of the trust domain.
func AuthorizeMemberOf(td spiffeid.TrustDomain) Authorizer {
	return func(id spiffeid.ID, _ []*x509.Certificate) error {
		if id.MemberOf(td) {
			return nil
		}
		return fmt.Errorf("%s is not in trust domain %s", id, td.Name())
	}
}

// Option adjusts a configuration.
type Option func(*options)

type options struct {
	minVersion   uint16
	optionalPeer bool
	now          func() time.Time
	check        func(id spiffeid.ID, chain []*x509.Certificate) error
	nextProtos   []string
	td           spiffeid.TrustDomain
	staple       func(leaf *x509.Certificate) []byte
	verified     *chainCache
}

// WithTLS12 accepts TLS 1.2 (AEAD suites only) besides the default TLS 1.3.
func WithTLS12() Option { return func(o *options) { o.minVersion = tls.VersionTLS12 } }

// WithOptionalClientCertificate lets clients connect without a certificate
// (servers only): the migration mode of "optional mTLS". A client that does
// present one is verified and authorized as usual.
func WithOptionalClientCertificate() Option { return func(o *options) { o.optionalPeer = true } }

// WithClock sets the time used to check validity; the default is time.Now.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithPeerCheck adds a check run on every verified peer before
// authorization, such as a revocation lookup. Its error refuses the peer.
func WithPeerCheck(f func(id spiffeid.ID, chain []*x509.Certificate) error) Option {
	return func(o *options) { o.check = f }
}

// WithOCSPStaple staples the OCSP response staple(leaf) returns (nil for
// none) to the certificate the server presents.
func WithOCSPStaple(staple func(leaf *x509.Certificate) []byte) Option {
	return func(o *options) { o.staple = staple }
}

// WithNextProtos sets the ALPN protocols (e.g. "h2", "http/1.1").
func WithNextProtos(p ...string) Option { return func(o *options) { o.nextProtos = p } }

// WithTrustDomain accepts servers of this trust domain only, verified
// against its bundle (clients only). By default a server is verified
// against the bundle of its own trust domain, as go-spiffe does, so a
// bundle source that holds federated bundles reaches federated servers (the
// Authorizer must still name them).
func WithTrustDomain(td spiffeid.TrustDomain) Option { return func(o *options) { o.td = td } }

func build(opts []Option) *options {
	o := &options{minVersion: tls.VersionTLS13, now: time.Now, verified: &chainCache{}}
	for _, f := range opts {
		f(o)
	}
	return o
}

// modern AEAD suites for TLS 1.2; TLS 1.3 suites are not configurable.
var suites12 = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// certCache turns SVIDs into tls.Certificates once per SVID.
type certCache struct {
	mu     sync.Mutex
	leaf   *x509.Certificate
	cert   *tls.Certificate
	inter  []*x509.Certificate
	staple func(*x509.Certificate) []byte
}

// intermediates returns the intermediates of the certificate last served.
func (c *certCache) intermediates() []*x509.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inter
}

func (c *certCache) get(src x509svid.Source) (*tls.Certificate, error) {
	tc, err := c.getCert(src)
	if err != nil || c.staple == nil {
		return tc, err
	}
	if st := c.staple(tc.Leaf); st != nil {
		cp := *tc
		cp.OCSPStaple = st
		return &cp, nil
	}
	return tc, nil
}

func (c *certCache) getCert(src x509svid.Source) (*tls.Certificate, error) {
	svid, err := src.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("no certificate to present: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leaf == svid.Certificates[0] {
		return c.cert, nil
	}
	tc := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, x := range svid.Certificates {
		tc.Certificate = append(tc.Certificate, x.Raw)
	}
	c.leaf, c.cert, c.inter = svid.Certificates[0], tc, svid.Certificates[1:]
	return tc, nil
}

// ServerConfig returns a server configuration that presents svid's current
// certificate, requires a client certificate (unless
// WithOptionalClientCertificate), verifies it against bundle for the
// client's trust domain, and authorizes its SPIFFE ID.
func ServerConfig(svid x509svid.Source, bundle x509bundle.Source, authorize Authorizer, opts ...Option) *tls.Config {
	o := build(opts)
	cache := &certCache{staple: o.staple}
	cfg := &tls.Config{
		MinVersion: o.minVersion,
		NextProtos: o.nextProtos,
		ClientAuth: tls.RequireAnyClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return cache.get(svid)
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				if o.optionalPeer {
					return nil
				}
				return &PeerError{Reason: ReasonNoCertificate}
			}
			// Our own intermediates help clients that send only their leaf
			// (openssl s_client -cert, curl): they are this CA's anyway.
			return verifyAndAuthorize(cs.PeerCertificates, cache.intermediates(), bundle, x509.ExtKeyUsageClientAuth, o, authorize)
		},
	}
	if o.minVersion < tls.VersionTLS13 {
		cfg.CipherSuites = suites12
	}
	if o.optionalPeer {
		cfg.ClientAuth = tls.RequestClientCert
	}
	return cfg
}

// ClientConfig returns a client configuration that presents svid's current
// certificate and accepts a server as SPIFFE peers do: its chain must verify
// against the bundle of the server's trust domain (from bundle: a server of
// a trust domain it holds no bundle for is refused; WithTrustDomain admits
// one trust domain only) with extended key usage serverAuth, at the current
// time, it must pass WithPeerCheck's check (revocation), and authorize must
// accept its SPIFFE ID. The server's certificate needs no DNS or IP name:
// the SPIFFE ID is the server's identity, so authorize should name the
// server exactly (AuthorizeID), not a whole trust domain.
//
// serverName, when not empty, is checked in addition: the server's
// certificate must carry it as a DNS or IP SAN, as in web PKI. It is also
// sent as SNI. Leave it empty to authenticate by SPIFFE ID alone (the
// dialled host is then sent as SNI by tls.Dial, as usual).
//
// The bundle is read at every handshake, so a configuration follows
// rotations of both the bundle and the client certificate.
func ClientConfig(svid x509svid.Source, bundle x509bundle.Source, authorize Authorizer, serverName string, opts ...Option) (*tls.Config, error) {
	o := build(opts)
	td := o.td // zero: each server is verified against its own trust domain's bundle
	if !td.IsZero() {
		if _, err := bundle.GetX509BundleForTrustDomain(td); err != nil {
			return nil, err
		}
	}
	if authorize == nil {
		return nil, errors.New("tlsconfig: an Authorizer is required: it decides which SPIFFE ID the server must have")
	}
	cache := &certCache{}
	cfg := &tls.Config{
		MinVersion: o.minVersion,
		NextProtos: o.nextProtos,
		ServerName: serverName,
		Time:       o.now,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return cache.get(svid)
		},
		// crypto/tls cannot verify a chain without also requiring the
		// server's certificate to name the dialled host, which SPIFFE
		// servers need not do (X.509-SVID: the SPIFFE ID is the identity).
		// Its built-in verification is therefore turned off here, in this
		// one audited place, and VerifyConnection does all of it instead:
		// a certificate is required, the chain must verify to the bundle
		// with serverAuth at the current time, serverName (when set) must be
		// named, the peer check (revocation) and authorize must pass.
		// VerifyConnection runs on every handshake, resumed ones included,
		// and its error aborts the handshake; TestClientConfigRefuses proves
		// that no certificate, a foreign chain, an expired or client-only
		// certificate, a wrong ID or a missing name is refused.
		InsecureSkipVerify: true, //nolint:gosec // full SPIFFE verification in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyServer(cs.PeerCertificates, td, bundle, serverName, o, authorize)
		},
	}
	if o.minVersion < tls.VersionTLS13 {
		cfg.CipherSuites = suites12
	}
	return cfg, nil
}

// verifyServer is the whole verification of a server by a client.
func verifyServer(certs []*x509.Certificate, td spiffeid.TrustDomain, bundle x509bundle.Source, serverName string, o *options, authorize Authorizer) error {
	if len(certs) == 0 {
		return &PeerError{Reason: ReasonNoCertificate}
	}
	leaf := certs[0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return &PeerError{Reason: ReasonNoSPIFFEID, Cert: leaf, Err: err}
	}
	if !td.IsZero() && !id.MemberOf(td) {
		return &PeerError{Reason: ReasonUnknownAuthority, ID: id, Cert: leaf,
			Err: fmt.Errorf("the server is in trust domain %s, but this client verifies servers against the bundle of %s only", id.TrustDomain().Name(), td.Name())}
	}
	id, chains, err := o.verified.verify(certs, nil, bundle, x509.ExtKeyUsageServerAuth, o.now())
	if err != nil {
		return err
	}
	if serverName != "" {
		if err := leaf.VerifyHostname(serverName); err != nil {
			return &PeerError{Reason: ReasonNameMismatch, ID: id, Cert: leaf,
				Err: fmt.Errorf("%w (a server name was asked for, so it must be in the certificate besides the SPIFFE ID; leave it out to authenticate the server by SPIFFE ID alone)", err)}
		}
	}
	if o.check != nil {
		if err := o.check(id, chains[0]); err != nil {
			return asPeerError(err, id, leaf)
		}
	}
	if err := authorize(id, chains[0]); err != nil {
		return &PeerError{Reason: ReasonNotAuthorized, ID: id, Cert: leaf, Err: err}
	}
	return nil
}

func asPeerError(err error, id spiffeid.ID, leaf *x509.Certificate) error {
	var pe *PeerError
	if errors.As(err, &pe) {
		return pe
	}
	return &PeerError{Reason: ReasonBadCertificate, ID: id, Cert: leaf, Err: err}
}

func verifyAndAuthorize(certs, extraIntermediates []*x509.Certificate, bundle x509bundle.Source, usage x509.ExtKeyUsage, o *options, authorize Authorizer) error {
	now := o.now()
	id, chains, err := o.verified.verify(certs, extraIntermediates, bundle, usage, now)
	if err != nil {
		return err
	}
	if o.check != nil {
		if err := o.check(id, chains[0]); err != nil {
			return asPeerError(err, id, certs[0])
		}
	}
	if err := authorize(id, chains[0]); err != nil {
		return &PeerError{Reason: ReasonNotAuthorized, ID: id, Cert: certs[0], Err: err}
	}
	return nil
}

// VerifyPeer verifies a peer's certificates (leaf first) as an X509-SVID
// for usage at time now: one SPIFFE ID, not a CA, a chain to the bundle of
// the ID's trust domain. It returns the ID and the verified chains, or a
// *PeerError.
func VerifyPeer(certs []*x509.Certificate, bundle x509bundle.Source, usage x509.ExtKeyUsage, now time.Time) (spiffeid.ID, [][]*x509.Certificate, error) {
	return verifyPeer(certs, nil, bundle, usage, now)
}

func verifyPeer(certs, extraIntermediates []*x509.Certificate, bundle x509bundle.Source, usage x509.ExtKeyUsage, now time.Time) (spiffeid.ID, [][]*x509.Certificate, error) {
	if len(certs) == 0 {
		return spiffeid.ID{}, nil, &PeerError{Reason: ReasonNoCertificate}
	}
	leaf := certs[0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return spiffeid.ID{}, nil, &PeerError{Reason: ReasonNoSPIFFEID, Cert: leaf, Err: err}
	}
	if leaf.IsCA {
		return id, nil, &PeerError{Reason: ReasonBadCertificate, ID: id, Cert: leaf, Err: errors.New("a CA certificate cannot be a peer identity")}
	}
	b, err := bundle.GetX509BundleForTrustDomain(id.TrustDomain())
	if err != nil {
		return id, nil, &PeerError{Reason: ReasonUnknownAuthority, ID: id, Cert: leaf, Err: err}
	}
	inter := pki.CertPool(certs[1:])
	for _, c := range extraIntermediates {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: pki.CertPool(b.X509Authorities()), Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}})
	if err != nil {
		return id, nil, classify(err, id, leaf, now)
	}
	return id, chains, nil
}

func classify(err error, id spiffeid.ID, leaf *x509.Certificate, now time.Time) error {
	var ce x509.CertificateInvalidError
	var ua x509.UnknownAuthorityError
	switch {
	case errors.As(err, &ce) && ce.Reason == x509.Expired:
		if now.Before(ce.Cert.NotBefore) {
			return &PeerError{Reason: ReasonNotYetValid, ID: id, Cert: ce.Cert, Err: err}
		}
		return &PeerError{Reason: ReasonExpired, ID: id, Cert: ce.Cert, Err: err}
	case errors.As(err, &ce) && ce.Reason == x509.IncompatibleUsage:
		return &PeerError{Reason: ReasonWrongUsage, ID: id, Cert: leaf, Err: err}
	case errors.As(err, &ua):
		return &PeerError{Reason: ReasonUnknownAuthority, ID: id, Cert: leaf, Err: err}
	}
	return &PeerError{Reason: ReasonBadCertificate, ID: id, Cert: leaf, Err: err}
}

// PeerID returns the SPIFFE ID of a connection's verified peer.
func PeerID(cs tls.ConnectionState) (spiffeid.ID, bool) {
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, false
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	return id, err == nil
}

// chainCache remembers, for a short while, that a presented chain verified
// against a given set of roots, so that a client opening many connections
// with one certificate costs two signature checks once, not per handshake.
// Revocation checks and authorization still run on every handshake; an
// entry lives at most chainCacheTTL and never past the chain's validity.
type chainCache struct {
	mu      sync.Mutex
	entries map[[32]byte]chainEntry
}

type chainEntry struct {
	id       spiffeid.ID
	chains   [][]*x509.Certificate
	notAfter time.Time
	from     time.Time
}

const (
	chainCacheTTL  = time.Minute
	chainCacheSize = 4096
)

func (c *chainCache) verify(certs, extra []*x509.Certificate, bundle x509bundle.Source, usage x509.ExtKeyUsage, now time.Time) (spiffeid.ID, [][]*x509.Certificate, error) {
	if c == nil || len(certs) == 0 {
		return verifyPeer(certs, extra, bundle, usage, now)
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return verifyPeer(certs, extra, bundle, usage, now)
	}
	b, err := bundle.GetX509BundleForTrustDomain(id.TrustDomain())
	if err != nil {
		return verifyPeer(certs, extra, bundle, usage, now)
	}
	// The key covers everything the verdict depends on: the presented chain,
	// the extra intermediates, the roots, and the usage.
	h := sha256.New()
	fmt.Fprintf(h, "%d|", usage)
	for _, group := range [][]*x509.Certificate{certs, extra, b.X509Authorities()} {
		for _, x := range group {
			sum := sha256.Sum256(x.Raw)
			h.Write(sum[:])
		}
		h.Write([]byte{'|'})
	}
	var key [32]byte
	copy(key[:], h.Sum(nil))
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if ok && !now.Before(e.from) && now.Before(e.notAfter) {
		return e.id, e.chains, nil
	}
	vid, chains, err := verifyPeer(certs, extra, bundle, usage, now)
	if err != nil {
		return vid, chains, err
	}
	e = chainEntry{id: vid, chains: chains, from: now, notAfter: now.Add(chainCacheTTL)}
	for _, x := range chains[0] {
		if x.NotAfter.Before(e.notAfter) {
			e.notAfter = x.NotAfter
		}
	}
	c.mu.Lock()
	if c.entries == nil || len(c.entries) >= chainCacheSize {
		c.entries = map[[32]byte]chainEntry{}
	}
	c.entries[key] = e
	c.mu.Unlock()
	return vid, chains, nil
}
