// Package proxy is mutual's data plane: an inbound proxy that terminates
// mutual TLS in front of a plaintext service and authorizes callers by
// SPIFFE ID, and an outbound proxy that originates mutual TLS for a
// plaintext client.
package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/tlsconfig"
)

// Mode is strict (a certificate is required) or permissive (optional mTLS).
type Mode string

// Modes.
const (
	Strict     Mode = "strict"
	Permissive Mode = "permissive"
)

// Protocol is what the inbound proxy understands of the traffic.
type Protocol string

// Protocols.
const (
	TCP  Protocol = "tcp"
	HTTP Protocol = "http"
)

// PolicySource returns the current authorization policy. A change must come
// as a new *authz.Policy, never by editing one in place: in http mode a
// connection remembers that a policy allows its peer every request until
// Policy returns another value.
type PolicySource interface {
	Policy() *authz.Policy
}

// InboundConfig configures an inbound proxy. Fields without a default are
// required.
type InboundConfig struct {
	// Target is the plaintext service, host:port.
	Target string
	// SVID and Bundle supply the proxy's certificate and the trusted roots;
	// they are asked again at every handshake, so rotations apply at once.
	SVID   x509svid.Source
	Bundle x509bundle.Source
	// Policy authorizes peers.
	Policy PolicySource
	// Partners, if set, supplies the partnerships in force. A partner's
	// peer (spiffe://TD/partner/NAME/..., or any ID of a partnership's
	// trust domain) reaches only what its partnership's scope names, even
	// where Policy allows more. Nil knows no partnership: every partner
	// identity of the proxy's trust domain is refused.
	Partners PartnerSource
	// Mode defaults to Strict; Protocol defaults to TCP.
	Mode     Mode
	Protocol Protocol
	// TLS12 accepts TLS 1.2 besides TLS 1.3.
	TLS12 bool
	// PeerCheck, if set, runs on every verified client before authorization
	// (revocation checks plug in here).
	PeerCheck func(id spiffeid.ID, chain []*x509.Certificate) error
	// Staple, if set, returns an OCSP response to staple to the proxy's
	// certificate.
	Staple func(leaf *x509.Certificate) []byte
	Limits Limits
	// Log receives one line per connection (tcp) or request (http) and per
	// refused handshake; nil discards. Lines of forwarded requests (http)
	// and of relayed connections (tcp; those without mTLS, in permissive
	// mode, within a limit of their own) are sampled (RequestLogLimit);
	// refused ones and tcp connections closed by revocation, a partner's
	// scope or the drain are all logged.
	Log *slog.Logger
	// RequestLogLimit is how many forwarded requests (http mode) or relayed
	// connections (tcp mode: as many again for those without mTLS) a second
	// get a log line; past it a second's
	// others are only counted (the metrics have every one) and one line
	// says how many were not logged. Zero means DefaultRequestLogLimit;
	// negative, every one.
	RequestLogLimit int
	// Metrics and Migration may be nil.
	Metrics   *Metrics
	Migration *MigrationReport
}

// Inbound terminates mutual TLS and forwards to a plaintext target.
type Inbound struct {
	cfg    InboundConfig
	log    *slog.Logger
	tls    *tls.Config
	active atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]*liveConn
	wg    sync.WaitGroup

	// backends are the idle keep-alive connections to the target of the
	// HTTP/1.1 path.
	backends backendPool
	// sample limits the log lines of forwarded requests (http) and relayed
	// mTLS connections (tcp); samplePlain those of tcp connections without
	// mTLS, apart, so that neither kind can push the other out.
	sample, samplePlain logSampler
	// park holds the idle tcp-mode relays (relayPipe).
	park parker
	// targetKeepAlive is the dialer's KeepAlive for the target: off for a
	// loopback target, which cannot vanish without its socket closing.
	targetKeepAlive time.Duration
}

// liveConn is an open connection and every leg that closes with it: the
// connection to the target in tcp mode, the upgraded tunnel's request in
// http mode.
type liveConn struct {
	conn   net.Conn
	id     spiffeid.ID
	serial string

	// h1 is the connection's state on the HTTP/1.1 path, if it is served
	// there.
	h1 *h1Conn

	mu     sync.Mutex
	closed bool
	// closedBy names who closed the connection (closeFor), if anyone did.
	closedBy string
	legs     []func()
}

// isClosed reports whether the connection has been closed (revocation,
// drain).
func (lc *liveConn) isClosed() bool {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.closed
}

// attach adds a leg that closes with the connection. It reports false, and
// closes the leg at once, when the connection has been closed already (a
// revocation or the drain got there first).
func (lc *liveConn) attach(closeLeg func()) bool {
	lc.mu.Lock()
	if lc.closed {
		lc.mu.Unlock()
		closeLeg()
		return false
	}
	lc.legs = append(lc.legs, closeLeg)
	lc.mu.Unlock()
	return true
}

// Who closes a connection (liveConn.closeFor): its tcp-mode log line says
// so, and is never sampled away.
const (
	closedByRevocation   = "revocation"
	closedByPartnerScope = "partner_scope"
	closedByDrain        = "drain"
)

// closeFor closes the connection as close does, for the reason by (one of
// the closedBy constants); the first reason given stays.
func (lc *liveConn) closeFor(by string) {
	lc.mu.Lock()
	if lc.closedBy == "" {
		lc.closedBy = by
	}
	lc.mu.Unlock()
	lc.close()
}

// closer is why closeFor closed the connection; "" when it did not.
func (lc *liveConn) closer() string {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.closedBy
}

// close closes the connection and every leg attached to it.
func (lc *liveConn) close() {
	lc.mu.Lock()
	lc.closed = true
	legs := lc.legs
	lc.legs = nil
	lc.mu.Unlock()
	lc.conn.Close()
	for _, f := range legs {
		f()
	}
}

// NewInbound checks cfg and builds the proxy; it starts nothing.
func NewInbound(cfg InboundConfig) (*Inbound, error) {
	if cfg.Target == "" {
		return nil, errors.New("--target: required: the plaintext service's host:port")
	}
	if _, _, err := net.SplitHostPort(cfg.Target); err != nil {
		return nil, fmt.Errorf("--target %q: %w", cfg.Target, err)
	}
	if cfg.SVID == nil || cfg.Bundle == nil {
		return nil, errors.New("proxy: no certificate source")
	}
	if cfg.Policy == nil {
		return nil, errors.New("proxy: no authorization policy")
	}
	if cfg.Mode == "" {
		cfg.Mode = Strict
	}
	if cfg.Protocol == "" {
		cfg.Protocol = TCP
	}
	switch cfg.Mode {
	case Strict, Permissive:
	default:
		return nil, fmt.Errorf("--mode %q: use strict or permissive", cfg.Mode)
	}
	switch cfg.Protocol {
	case TCP, HTTP:
	default:
		return nil, fmt.Errorf("--protocol %q: use tcp or http", cfg.Protocol)
	}
	cfg.Limits = cfg.Limits.withDefaults()
	p := &Inbound{cfg: cfg, log: cfg.Log, conns: map[net.Conn]*liveConn{}, targetKeepAlive: keepAliveFor(cfg.Target)}
	p.sample.limit = int64(cfg.RequestLogLimit)
	if cfg.RequestLogLimit == 0 {
		p.sample.limit = DefaultRequestLogLimit
	}
	p.samplePlain.limit = p.sample.limit
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	var opts []tlsconfig.Option
	if cfg.TLS12 {
		opts = append(opts, tlsconfig.WithTLS12())
	}
	if cfg.Mode == Permissive {
		opts = append(opts, tlsconfig.WithOptionalClientCertificate())
	}
	if cfg.PeerCheck != nil {
		opts = append(opts, tlsconfig.WithPeerCheck(cfg.PeerCheck))
	}
	if cfg.Staple != nil {
		opts = append(opts, tlsconfig.WithOCSPStaple(cfg.Staple))
	}
	authorize := p.authorizeConnection
	if cfg.Protocol == HTTP {
		// HTTP authorizes each request, so that a refusal is a 403 with a
		// reason rather than a reset; the handshake checks trust only.
		authorize = tlsconfig.AuthorizeAny()
		opts = append(opts, tlsconfig.WithNextProtos("h2", "http/1.1"))
	}
	p.tls = tlsconfig.ServerConfig(cfg.SVID, cfg.Bundle, authorize, opts...)
	return p, nil
}

// keepAliveFor is the dialer's KeepAlive for target: TCP keep-alives find
// a remote service that vanished, but a loopback one cannot vanish without
// its socket closing, and switching them on costs four system calls per
// connection. 0 is the dialer's default.
func keepAliveFor(target string) time.Duration {
	host, _, _ := net.SplitHostPort(target)
	if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
		return -1
	}
	return 0
}

func (p *Inbound) authorizeConnection(id spiffeid.ID, chain []*x509.Certificate) error {
	var d atomic.Pointer[partnerDecision]
	if err := p.checkPartner(&d, id, "", ""); err != nil {
		return err
	}
	return p.cfg.Policy.Policy().Allow(authz.Request{ID: id, Roles: p.peerRoles(id, chain[0])})
}

// peerRoles returns the roles the peer's certificate carries when the peer
// is of the proxy's own trust domain, and none for a peer of a federated
// one: another domain's CA may write any extension, so its peers are
// authorized only by rules that name their IDs (spiffe://partner.example/...),
// never by a role.
func (p *Inbound) peerRoles(id spiffeid.ID, leaf *x509.Certificate) []string {
	own, err := p.cfg.SVID.GetX509SVID()
	if err != nil || own.ID.TrustDomain() != id.TrustDomain() {
		return nil
	}
	return identity.Roles(leaf)
}

// TLSConfig returns the server TLS configuration the proxy uses.
func (p *Inbound) TLSConfig() *tls.Config { return p.tls }

// Active returns the number of open connections.
func (p *Inbound) Active() int64 { return p.active.Load() }

// acceptLogLimit is how many failed accepts a second Serve logs.
const acceptLogLimit = 10

// Serve accepts connections on ln (plain TCP) until ctx is done, then stops
// accepting and drains live connections for up to Limits.DrainTimeout.
// A temporary accept error (too many open files, a connection aborted
// before it was accepted) is logged and retried after a pause that grows
// from 5 ms to 1 s, as net/http's server does. Any other accept error ends
// Serve as ctx's end does: live connections drain, the parker closes, and
// Serve returns the error. In http mode, serveHTTP serves.
func (p *Inbound) Serve(ctx context.Context, ln net.Listener) error {
	if p.cfg.Protocol == HTTP {
		return p.serveHTTP(ctx, ln)
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var pause time.Duration
	acceptLog := logSampler{limit: acceptLogLimit}
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return p.drain()
			}
			if temporaryAcceptError(err) {
				pause = min(max(2*pause, 5*time.Millisecond), time.Second)
				// At most acceptLogLimit lines a second: accepts that
				// alternate with failures reset the pause each time.
				if ok, dropped := acceptLog.allow(time.Now()); ok {
					p.log.Warn("accept failed; retrying", "listener", ln.Addr().String(), "error", err.Error(),
						"retry_in", pause.String(), "not_logged_before", dropped)
				}
				if !sleepCtx(ctx, pause) {
					return p.drain()
				}
				continue
			}
			p.drain()
			return fmt.Errorf("proxy: accepting connections on %s: %w", ln.Addr(), err)
		}
		pause = 0
		if !p.admit(c) {
			continue
		}
		p.wg.Add(1)
		go func() {
			done := func() {
				p.release()
				p.wg.Done()
			}
			relay := p.handleTCP(ctx, c)
			if relay == nil {
				done()
				return
			}
			// Relay in a new goroutine: this one's stack grew deep in the
			// handshake. done runs when the relay ends, which may be after
			// its goroutines have parked and gone.
			go relay(done)
		}()
	}
}

// temporaryAcceptError reports whether the accept error err may pass (a
// timeout, EMFILE, ENFILE, ECONNABORTED...): the errors net/http's server
// retries.
func temporaryAcceptError(err error) bool {
	var te interface{ Temporary() bool }
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.As(err, &te) && te.Temporary()
}

// sleepCtx waits for d, or until ctx is done: false then.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// admit enforces MaxConnections.
func (p *Inbound) admit(c net.Conn) bool {
	if p.active.Add(1) > int64(p.cfg.Limits.MaxConnections) {
		p.active.Add(-1)
		c.Close()
		p.cfg.Metrics.conn("refused_limit")
		p.log.Warn("connection refused", "remote", peerString(c), "reason", "connection limit", "limit", p.cfg.Limits.MaxConnections)
		return false
	}
	if p.cfg.Metrics != nil {
		p.cfg.Metrics.active.Inc()
	}
	return true
}

func (p *Inbound) release() {
	p.active.Add(-1)
	if p.cfg.Metrics != nil {
		p.cfg.Metrics.active.Dec()
	}
}

// drain waits for live connections, then cuts what is left, closes the
// parker and logs how many connection lines the sampling left out since
// its last such line.
func (p *Inbound) drain() error {
	p.drainUntil(time.Now().Add(p.cfg.Limits.DrainTimeout))
	p.park.close()
	if n := p.sample.dropped.Swap(0); n > 0 {
		p.log.Info("connections not logged", "count", n, "limit_per_second", p.sample.limit)
	}
	if n := p.samplePlain.dropped.Swap(0); n > 0 {
		p.log.Info("connections without mTLS not logged", "count", n, "limit_per_second", p.samplePlain.limit)
	}
	return nil
}

// drainUntil waits for live connections until deadline, then closes every
// one left, with all its legs, and waits for their handlers to end.
func (p *Inbound) drainUntil(deadline time.Time) {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	p.mu.Lock()
	left := make([]*liveConn, 0, len(p.conns))
	for _, lc := range p.conns {
		left = append(left, lc)
	}
	p.mu.Unlock()
	if len(left) > 0 {
		p.log.Warn("drain timeout: closing connections still open", "connections", len(left), "drain_timeout", p.cfg.Limits.DrainTimeout.String())
	}
	for _, lc := range left {
		lc.closeFor(closedByDrain)
	}
	<-done
}

// handshake runs the server side of TLS on c, with the handshake timeout,
// sniffing plaintext first in permissive mode. It returns the TLS conn (nil
// for plaintext) and the connection to relay.
func (p *Inbound) handshake(ctx context.Context, c net.Conn) (*tls.Conn, net.Conn, error) {
	if p.cfg.Mode == Permissive {
		sc, isTLS, err := sniff(c, p.cfg.Limits.HandshakeTimeout)
		if err != nil {
			return nil, nil, err
		}
		if !isTLS {
			return nil, sc, nil
		}
		c = sc
	}
	// Over a pollConn, an idle connection can be waited on without
	// crypto/tls's stack (tlsReader).
	tc := tls.Server(&pollConn{Conn: c}, p.tls)
	hctx, cancel := context.WithTimeout(ctx, p.cfg.Limits.HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, nil, err
	}
	return tc, tc, nil
}

func (p *Inbound) refused(c net.Conn, err error) {
	label, words := reason(err)
	// Log, then count: a counted refusal has always been logged.
	defer p.cfg.Metrics.conn("refused")
	defer p.cfg.Metrics.handshake("refused", label)
	attrs := []any{"remote", peerString(c), "reason", label, "detail", words}
	var pe *tlsconfig.PeerError
	if errors.As(err, &pe) && !pe.ID.IsZero() {
		attrs = append(attrs, "peer_id", pe.ID.String())
	}
	if pe != nil && pe.Cert != nil {
		attrs = append(attrs, "serial", pki.FormatSerial(pe.Cert.SerialNumber))
	}
	if label == "closed before TLS" {
		// Load-balancer health checks and port scans: not worth a warning.
		p.log.Debug("handshake refused", attrs...)
		return
	}
	p.log.Warn("handshake refused", attrs...)
}

// handleTCP runs the handshake and connects to the target; it returns the
// relay to run, or nil when the connection has ended. The relay calls done
// when the connection has ended.
func (p *Inbound) handleTCP(ctx context.Context, c net.Conn) (relay func(done func())) {
	start := time.Now()
	tc, rc, err := p.handshake(ctx, c)
	if err != nil {
		p.refused(c, err)
		c.Close()
		return nil
	}
	lc := &liveConn{conn: rc}
	if tc != nil {
		p.cfg.Metrics.handshake("ok", "")
		if cs := tc.ConnectionState(); len(cs.PeerCertificates) > 0 {
			lc.id, _ = tlsconfig.PeerID(cs)
			lc.serial = pki.FormatSerial(cs.PeerCertificates[0].SerialNumber)
		} else {
			p.cfg.Migration.Record(c.RemoteAddr(), "no-certificate")
		}
	} else {
		p.cfg.Migration.Record(c.RemoteAddr(), "plaintext")
	}
	// Track the connection before anything else, then check the peer again:
	// a revocation that arrived since the handshake closes it.
	p.track(rc, lc)
	if tc != nil && p.cfg.PeerCheck != nil && !lc.id.IsZero() {
		cs := tc.ConnectionState()
		if err := p.cfg.PeerCheck(lc.id, cs.PeerCertificates); err != nil {
			p.refused(c, err)
			rc.Close()
			p.untrack(rc)
			return nil
		}
	}
	d := net.Dialer{Timeout: p.cfg.Limits.DialTimeout, KeepAlive: p.targetKeepAlive}
	target, err := d.DialContext(ctx, "tcp", p.cfg.Target)
	if err != nil {
		p.cfg.Metrics.conn("target_unreachable")
		p.log.Error("target unreachable", "remote", peerString(c), "peer_id", idString(lc.id), "target", p.cfg.Target, "error", err.Error())
		rc.Close()
		p.untrack(rc)
		return nil
	}
	// From here closing the connection (revocation, drain) closes both
	// legs, parked or not; if it was closed while we dialled, it never
	// goes live.
	rp := newRelayPipe(rc, target, p.cfg.Limits, &p.park)
	if !lc.attach(rp.closeBoth) {
		p.log.Info("connection closed before it reached the target", "remote", peerString(c), "peer_id", idString(lc.id), "serial", lc.serial)
		p.untrack(rc)
		return nil
	}
	p.cfg.Metrics.conn("ok")
	mtls := tc != nil && !lc.id.IsZero()
	return func(done func()) {
		rp.run(func(in, out int64) {
			p.untrack(rc)
			p.relayed(c, lc, mtls, in, out, start)
			done()
		})
	}
}

// relayed counts and logs a tcp-mode connection that has ended. Its log
// line is sampled as forwarded requests are in http mode (RequestLogLimit),
// mTLS connections and those without (permissive mode) each within their
// own limit, so that a flood of cheap plaintext connections cannot push
// out the lines of mTLS ones, nor the reverse; one closed by revocation, a
// partner's scope or the drain (closed_by says which) is always logged.
// The metrics count every connection.
func (p *Inbound) relayed(c net.Conn, lc *liveConn, mtls bool, in, out int64, start time.Time) {
	if p.cfg.Metrics != nil {
		p.cfg.Metrics.bytes.WithLabelValues("to_target").Add(float64(in))
		p.cfg.Metrics.bytes.WithLabelValues("to_peer").Add(float64(out))
	}
	now := time.Now()
	by := lc.closer()
	if by == "" {
		s, what := &p.sample, "connections not logged"
		if !mtls {
			s, what = &p.samplePlain, "connections without mTLS not logged"
		}
		logged, dropped := s.allow(now)
		if dropped > 0 {
			p.log.Info(what, "count", dropped, "limit_per_second", s.limit)
		}
		if !logged {
			return
		}
	}
	attrs := []slog.Attr{slog.String("remote", peerString(c)),
		slog.String("peer_id", idString(lc.id)), slog.String("serial", lc.serial), slog.Bool("mtls", mtls),
		slog.Int64("bytes_to_target", in), slog.Int64("bytes_to_peer", out), slog.Int64("duration_ms", now.Sub(start).Milliseconds())}
	if by != "" {
		attrs = append(attrs, slog.String("closed_by", by))
	}
	p.log.LogAttrs(context.Background(), slog.LevelInfo, "connection", attrs...)
}

func (p *Inbound) track(c net.Conn, lc *liveConn) {
	p.mu.Lock()
	p.conns[c] = lc
	p.mu.Unlock()
}

func (p *Inbound) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// CloseConnections closes every live connection whose peer certificate
// matches, with both its legs: the hook revocation uses. It returns how
// many it closed.
func (p *Inbound) CloseConnections(match func(id spiffeid.ID, serial string) bool) int {
	return p.closeMatching(match, closedByRevocation)
}

// closeMatching closes every live connection whose peer certificate
// matches, for the reason by; it returns how many it closed.
func (p *Inbound) closeMatching(match func(id spiffeid.ID, serial string) bool, by string) int {
	p.mu.Lock()
	var hit []*liveConn
	for _, lc := range p.conns {
		if !lc.id.IsZero() && match(lc.id, lc.serial) {
			hit = append(hit, lc)
		}
	}
	p.mu.Unlock()
	for _, lc := range hit {
		lc.closeFor(by)
	}
	return len(hit)
}

func idString(id spiffeid.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}
