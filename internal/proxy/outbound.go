package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/tlsconfig"
)

// OutboundConfig configures an outbound proxy.
type OutboundConfig struct {
	// Target is the mTLS server, host:port.
	Target string
	// ServerName, when set, must also be in the server certificate as a DNS
	// or IP SAN (and is sent as SNI). Empty (the default): the server is
	// authenticated by its chain and SPIFFE ID alone, as SPIFFE peers are,
	// and its certificate needs no name.
	ServerName string
	// Expect lists the SPIFFE ID patterns the server must match (required).
	// It is what authenticates the server: name it exactly.
	Expect []authz.Pattern
	SVID   x509svid.Source
	Bundle x509bundle.Source
	TLS12  bool
	// PeerCheck, if set, runs on the verified server (revocation checks).
	PeerCheck func(id spiffeid.ID, chain []*x509.Certificate) error
	Limits    Limits
	Log       *slog.Logger
	Metrics   *Metrics
}

// Outbound accepts plaintext connections (on loopback) and relays them
// over mutual TLS to a server whose SPIFFE ID matches the expectation.
type Outbound struct {
	cfg      OutboundConfig
	tlsCfg   *tls.Config // follows rotations of the certificate and bundle
	sessions tls.ClientSessionCache
	log      *slog.Logger
	wg       sync.WaitGroup
	in       *Inbound // shares admission and tracking
}

// NewOutbound checks cfg and builds the proxy; it starts nothing.
func NewOutbound(cfg OutboundConfig) (*Outbound, error) {
	if _, _, err := net.SplitHostPort(cfg.Target); err != nil {
		return nil, fmt.Errorf("--target %q: %w", cfg.Target, err)
	}
	if len(cfg.Expect) == 0 {
		return nil, errors.New("--expect: required: the SPIFFE ID (or pattern) the server must have")
	}
	if cfg.SVID == nil || cfg.Bundle == nil {
		return nil, errors.New("proxy: no certificate source")
	}
	cfg.Limits = cfg.Limits.withDefaults()
	o := &Outbound{cfg: cfg, log: cfg.Log, sessions: tls.NewLRUClientSessionCache(64)}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	if cfg.ServerName == "" {
		for _, p := range cfg.Expect {
			if BroadExpectation(p) {
				o.log.Warn("--expect accepts a whole namespace of the trust domain as the server, and no --server-name is checked: any such workload (or node) certificate would be accepted as "+cfg.Target,
					"expect", p.String(), "fix", "--expect the server's exact SPIFFE ID")
			}
		}
	}
	o.in = &Inbound{cfg: InboundConfig{Limits: cfg.Limits, Metrics: cfg.Metrics}, log: o.log, conns: map[net.Conn]*liveConn{}}
	var opts []tlsconfig.Option
	if cfg.TLS12 {
		opts = append(opts, tlsconfig.WithTLS12())
	}
	if cfg.PeerCheck != nil {
		opts = append(opts, tlsconfig.WithPeerCheck(cfg.PeerCheck))
	}
	tc, err := tlsconfig.ClientConfig(cfg.SVID, cfg.Bundle, o.expectation(), cfg.ServerName, opts...)
	if err != nil {
		return nil, err
	}
	tc.ClientSessionCache = o.sessions
	o.tlsCfg = tc
	return o, nil
}

// BroadExpectation reports whether p, as an outbound proxy's --expect,
// leaves the top of the trust domain open: spiffe://td/** (every identity,
// nodes and admins included), spiffe://td/* or any pattern whose first
// segment is a wildcard. Without a --server-name, such a pattern accepts a
// whole class of unrelated workloads as the server.
func BroadExpectation(p authz.Pattern) bool {
	rest := strings.TrimPrefix(p.String(), "spiffe://")
	_, path, _ := strings.Cut(rest, "/")
	first, _, _ := strings.Cut(path, "/")
	return first == "*" || first == "**"
}

// expectation authorizes the server's identity.
func (o *Outbound) expectation() tlsconfig.Authorizer {
	return func(id spiffeid.ID, _ []*x509.Certificate) error {
		for _, p := range o.cfg.Expect {
			if p.Match(id) {
				return nil
			}
		}
		return fmt.Errorf("the server is %s, which matches no --expect pattern", id)
	}
}

// Serve accepts plaintext connections on ln until ctx is done, then drains.
func (o *Outbound) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return o.in.drain()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		if !o.in.admit(c) {
			continue
		}
		o.in.wg.Add(1)
		go func() {
			defer o.in.wg.Done()
			defer o.in.release()
			o.handle(ctx, c)
		}()
	}
}

// Dial opens one mutual TLS connection to the target, verified and
// authorized.
func (o *Outbound) Dial(ctx context.Context) (*tls.Conn, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: o.cfg.Limits.DialTimeout}, Config: o.tlsCfg}
	hctx, cancel := context.WithTimeout(ctx, o.cfg.Limits.HandshakeTimeout)
	defer cancel()
	c, err := d.DialContext(hctx, "tcp", o.cfg.Target)
	if err != nil {
		return nil, err
	}
	return c.(*tls.Conn), nil
}

func (o *Outbound) handle(ctx context.Context, c net.Conn) {
	start := time.Now()
	tc, err := o.Dial(ctx)
	if err != nil {
		label, words := reason(err)
		var ce *tls.CertificateVerificationError
		if errors.As(err, &ce) {
			label, words = "server certificate rejected", err.Error()
		}
		if !o.cfg.TLS12 && olderTLS(err) {
			label, words = "protocol mismatch", fmt.Sprintf("%s does not speak TLS 1.3, the only version this proxy uses by default: "+
				"add --tls12 to the outbound proxy (or upgrade the server to TLS 1.3): %v", o.cfg.Target, err)
		}
		o.cfg.Metrics.handshake("refused", label)
		o.cfg.Metrics.conn("refused")
		o.log.Warn("server refused", "remote", peerString(c), "target", o.cfg.Target, "reason", label, "detail", words)
		c.Close()
		return
	}
	o.cfg.Metrics.handshake("ok", "")
	o.cfg.Metrics.conn("ok")
	id, _ := tlsconfig.PeerID(tc.ConnectionState())
	lc := &liveConn{conn: tc, id: id, serial: pki.FormatSerial(tc.ConnectionState().PeerCertificates[0].SerialNumber)}
	o.in.track(tc, lc)
	defer o.in.untrack(tc)
	// Check the server again now that a revocation would find the
	// connection: one learnt during the handshake is not lost.
	if o.cfg.PeerCheck != nil {
		if err := o.cfg.PeerCheck(id, tc.ConnectionState().PeerCertificates); err != nil {
			label, words := reason(err)
			o.cfg.Metrics.handshake("refused", label)
			o.log.Warn("server refused", "remote", peerString(c), "target", o.cfg.Target, "peer_id", id.String(), "reason", label, "detail", words)
			tc.Close()
			c.Close()
			return
		}
	}
	// Closing the tunnel (revocation, drain) closes the client's leg too.
	if !lc.attach(func() { c.Close() }) {
		return
	}
	out, in := pipe(c, tc, o.cfg.Limits)
	if o.cfg.Metrics != nil {
		o.cfg.Metrics.bytes.WithLabelValues("to_target").Add(float64(out))
		o.cfg.Metrics.bytes.WithLabelValues("to_peer").Add(float64(in))
	}
	o.log.Info("connection", "remote", peerString(c), "peer_id", id.String(), "target", o.cfg.Target,
		"bytes_to_target", out, "bytes_to_peer", in, "duration_ms", time.Since(start).Milliseconds())
}

// olderTLS reports whether a handshake failed because the server offers
// only versions below TLS 1.3: it answered with a protocol_version alert,
// or chose an older version.
func olderTLS(err error) bool {
	var ae tls.AlertError
	if errors.As(err, &ae) && ae == 70 { // protocol_version
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "protocol version not supported") || strings.Contains(msg, "server selected unsupported protocol version")
}

// CloseConnections closes live connections to servers matching match.
func (o *Outbound) CloseConnections(match func(id spiffeid.ID, serial string) bool) int {
	return o.in.CloseConnections(match)
}
