package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/metricsserver"
	"github.com/mutual-tls/mutual/internal/partnerfeed"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/revocation"
)

// Run starts the sidecar cfg describes, serves until ctx is done, drains,
// and returns once every part it started has stopped. The parts beside the
// proxy (certificate source, policy file, revocation, metrics) keep running
// while it drains, so a connection revoked during the drain is still closed.
func Run(ctx context.Context, cfg Config) error {
	s, err := open(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.close()
	return s.run(ctx)
}

// sidecar is an opened sidecar: everything built and bound, nothing running.
type sidecar struct {
	log     *slog.Logger
	reg     *prometheus.Registry
	m       *proxy.Metrics
	src     CertSource
	parts   []func(context.Context) error // run beside the proxy
	closers []func()
	serve   func(context.Context, net.Listener) error
	port    *boundPort              // bound by open, listening once run knows the revocation status
	ln      net.Listener            // set by run when it listens
	extra   map[string]http.Handler // pages on the metrics listener
	metrics *metricsserver.Server
	attrs   []any // of "proxy listening"
	// revocation is the revocation watcher; nil when revocation is off.
	revocation *revocation.Watcher
	// listening is set once the proxy accepts connections.
	listening atomic.Bool
}

// open builds and binds everything cfg asks for, in the order a user meets
// their errors: policy, certificate, revocation, listener, metrics.
func open(ctx context.Context, cfg Config) (_ *sidecar, err error) {
	if (cfg.Inbound == nil) == (cfg.Outbound == nil) {
		return nil, errors.New("sidecar: give exactly one of Inbound and Outbound")
	}
	s := &sidecar{reg: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if cfg.Inbound != nil {
		err = s.openInbound(ctx, cfg)
	} else {
		err = s.openOutbound(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}
	if s.port, err = bindTCP(cfg.Listen); err != nil {
		return nil, fmt.Errorf("--listen: %w", err)
	}
	s.closers = append(s.closers, func() {
		s.port.close()
		if s.ln != nil {
			s.ln.Close()
		}
	})
	if cfg.Metrics != "" {
		if s.metrics, err = metricsserver.Listen(cfg.Metrics, s.reg, metricsserver.Health(s.ready, s.extra)); err != nil {
			return nil, err
		}
		s.closers = append(s.closers, func() { s.metrics.Close() })
		s.attrs = append(s.attrs, "metrics", "http://"+s.metrics.Addr()+"/metrics")
	}
	return s, nil
}

// logger is cfg.Log (or a discarding one) naming the proxy.
func logger(cfg Config, direction string) *slog.Logger {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return log.With("proxy", direction, "listen", cfg.Listen)
}

func (s *sidecar) openInbound(ctx context.Context, cfg Config) error {
	in := cfg.Inbound
	s.log = logger(cfg, "inbound")
	s.m = proxy.NewMetrics(s.reg, "inbound")
	var pol proxy.PolicySource = proxy.StaticPolicy{P: in.Allow}
	if in.PolicyFile != "" {
		pf, err := proxy.LoadPolicyFile(in.PolicyFile, in.Allow, s.log, s.m)
		if err != nil {
			return err
		}
		pol = pf
		l := pf.Loop(cfg.PollInterval)
		l.Now = cfg.Reload
		s.parts = append(s.parts, l.Run)
	}
	if err := s.openSource(ctx, cfg); err != nil {
		return err
	}
	mig := proxy.NewMigrationReport()
	pc := proxy.InboundConfig{
		Target: in.Target, SVID: s.src, Bundle: s.src, Policy: pol,
		Mode: in.Mode, Protocol: in.Protocol, TLS12: cfg.TLS12, RequestLogLimit: in.RequestLogLimit,
		Limits: cfg.Limits, Log: s.log, Metrics: s.m, Migration: mig,
	}
	w, err := s.watcher(cfg)
	if err != nil {
		return err
	}
	feed := s.partnerFeed(ctx, w)
	if feed != nil {
		pc.Partners = feed
	}
	var stapler *revocation.Stapler
	if w != nil {
		s.revocation = w
		pc.PeerCheck = w.Check
		stapler = &revocation.Stapler{Source: s.src, Revoked: w.Revoked, Log: s.log}
		pc.Staple = stapler.Staple
	}
	p, err := proxy.NewInbound(pc)
	if err != nil {
		return err
	}
	if feed != nil {
		feed.OnChange = closeOutOfScope(p, s.log)
	}
	if w != nil {
		closeConns := closeRevoked(p, s.log)
		w.OnRevoke = func(e revocation.Event) {
			closeConns(e)
			stapler.Revoke(e)
		}
		s.parts = append(s.parts, w.Run, stapler.Run)
	}
	s.serve = p.Serve
	s.extra = map[string]http.Handler{"/migration": mig}
	s.attrs = []any{"mode", string(in.Mode), "protocol", string(in.Protocol), "target", in.Target}
	return nil
}

// partnerFeed follows the partnerships from the CA that the revocation
// watcher w follows, as a part, having asked once already (for up to a few
// seconds) so that the proxy knows them when it starts listening. Without a
// CA address it returns nil (and the proxy refuses partner identities).
func (s *sidecar) partnerFeed(ctx context.Context, w *revocation.Watcher) *partnerfeed.Feed {
	if w == nil || len(w.CAURLs) == 0 {
		s.log.Warn("no CA address to learn partnerships from: partner identities (spiffe://TD/partner/...) are refused")
		return nil
	}
	feed := &partnerfeed.Feed{CAURLs: w.CAURLs, Source: s.src, Log: s.log}
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := feed.Sync(sctx); err != nil {
		s.log.Warn("partnerships not learnt from the CA yet: partner identities and peers of other trust domains are refused until they are", "error", err.Error())
	}
	s.parts = append(s.parts, feed.Run)
	return feed
}

// closeOutOfScope closes the proxy's live connections that changed
// partnerships no longer cover, and logs it.
func closeOutOfScope(p *proxy.Inbound, log *slog.Logger) func() {
	return func() {
		if n := p.CloseOutOfScope(); n > 0 {
			log.Warn("partnerships changed: closed connections their scope no longer covers", "connections_closed", n)
		}
	}
}

func (s *sidecar) openOutbound(ctx context.Context, cfg Config) error {
	out := cfg.Outbound
	s.log = logger(cfg, "outbound")
	s.m = proxy.NewMetrics(s.reg, "outbound")
	if err := s.openSource(ctx, cfg); err != nil {
		return err
	}
	pc := proxy.OutboundConfig{
		Target: out.Target, ServerName: out.ServerName, Expect: out.Expect, SVID: s.src, Bundle: s.src,
		TLS12: cfg.TLS12, Limits: cfg.Limits, Log: s.log, Metrics: s.m,
	}
	w, err := s.watcher(cfg)
	if err != nil {
		return err
	}
	if w != nil {
		s.revocation = w
		pc.PeerCheck = w.Check
	}
	p, err := proxy.NewOutbound(pc)
	if err != nil {
		return err
	}
	if w != nil {
		w.OnRevoke = closeRevoked(p, s.log)
		s.parts = append(s.parts, w.Run)
	}
	s.serve = p.Serve
	s.attrs = []any{"target", out.Target, "expect", patterns(out.Expect)}
	return nil
}

func patterns(ps []authz.Pattern) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// run runs the proxy and its parts. The proxy stops when ctx is done or a
// part fails; the parts stop once the proxy has (drained included).
//
// The proxy listens only once it knows the revocation status (fail
// closed): until then its port is bound but refuses connections, /readyz
// says why, and a client retries as it would for a service not yet up.
func (s *sidecar) run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	partCtx, stopParts := context.WithCancel(context.WithoutCancel(ctx))
	defer stopParts()
	for _, part := range s.parts {
		g.Go(func() error { return part(partCtx) })
	}
	if s.metrics != nil {
		g.Go(func() error { return s.metrics.Run(partCtx) })
	}
	s.log.Info("proxy starting", s.attrs...)
	g.Go(func() error {
		defer stopParts()
		if !s.awaitRevocationStatus(ctx) {
			return nil
		}
		ln, err := s.port.listen()
		if err != nil {
			return fmt.Errorf("--listen: %w", err)
		}
		s.ln = ln
		s.listening.Store(true)
		s.log.Info("proxy listening", s.attrs...)
		if err := s.serve(ctx, ln); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}
	s.log.Info("proxy stopped")
	return nil
}

// statusPoll is how often a proxy waiting for its first revocation status
// looks again.
const statusPoll = 50 * time.Millisecond

// awaitRevocationStatus returns true once the revocation status is known
// (at once when revocation is off), false if ctx ends first.
func (s *sidecar) awaitRevocationStatus(ctx context.Context) bool {
	if s.revocation == nil || s.revocation.Current() == nil {
		return true
	}
	s.log.Info("proxy waiting for the revocation status",
		append([]any{"detail", "connections are refused until it is known", "reason", s.revocation.Current().Error()}, s.attrs...)...)
	t := time.NewTicker(statusPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			if s.revocation.Current() == nil {
				return true
			}
		}
	}
}

// ready is the proxy's /readyz: it has a certificate within its validity
// and knows the revocation status now (the feed is connected or the last
// CRL is current), unless revocation is off.
func (s *sidecar) ready() error {
	svid, err := s.src.GetX509SVID()
	if err != nil {
		return fmt.Errorf("no certificate yet: %w", err)
	}
	leaf, now := svid.Certificates[0], time.Now()
	if now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return fmt.Errorf("the proxy's certificate (%s) is valid only from %s to %s", svid.ID, leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if s.revocation != nil {
		if err := s.revocation.Current(); err != nil {
			return err
		}
	}
	if !s.listening.Load() {
		return errors.New("starting: not listening yet")
	}
	return nil
}

// close releases what open bound, last first.
func (s *sidecar) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}
