package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/revocation"
)

func proxyCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "proxy",
		Short: "Put mutual TLS in front of a service (inbound) or under a client (outbound)",
	}
	c.AddCommand(proxyInboundCmd(e), proxyOutboundCmd(e))
	return c
}

// sourceFlags choose where the proxy's certificate comes from.
type sourceFlags struct {
	identityDir string
	workloadAPI string
}

func (s *sourceFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&s.identityDir, "identity-dir", "", "identity directory (cert.pem, key.pem, bundle.pem), followed as it is rewritten")
	c.Flags().StringVar(&s.workloadAPI, "workload-api", "", "SPIFFE Workload API socket, e.g. unix:///run/mutual/agent.sock")
}

type certSource interface {
	x509svid.Source
	x509bundle.Source
}

// open returns the certificate source and a function to run alongside the
// proxy (following the directory) and one to close it.
func (s *sourceFlags) open(ctx context.Context, log *slog.Logger, m *proxy.Metrics) (certSource, func(context.Context) error, func(), error) {
	switch {
	case s.identityDir != "" && s.workloadAPI != "":
		return nil, nil, nil, flagError("identity-dir", "give --identity-dir or --workload-api, not both")
	case s.identityDir != "":
		src, err := identity.NewDirSource(s.identityDir)
		if err != nil {
			return nil, nil, nil, flagError("identity-dir", "%v", err)
		}
		m.ObserveCertificate(src.Identity().Leaf())
		run := func(ctx context.Context) error {
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-src.Changed():
						id := src.Identity()
						m.ObserveCertificate(id.Leaf())
						log.Info("identity reloaded", "dir", s.identityDir, "spiffe_id", id.ID.String(), "serial", pki.FormatSerial(id.Leaf().SerialNumber), "not_after", id.Leaf().NotAfter)
					}
				}
			}()
			return src.Run(ctx, time.Second, func(err error) {
				log.Warn("identity reload failed; serving the last good one", "dir", s.identityDir, "error", err.Error())
			})
		}
		return src, run, func() {}, nil
	case s.workloadAPI != "":
		if !strings.HasPrefix(s.workloadAPI, "unix://") && !strings.HasPrefix(s.workloadAPI, "tcp://") {
			return nil, nil, nil, flagError("workload-api", "%q: use unix:///path/to/socket", s.workloadAPI)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		src, err := workloadapi.NewX509Source(wctx, workloadapi.WithClientOptions(workloadapi.WithAddr(s.workloadAPI)))
		if err != nil {
			return nil, nil, nil, flagError("workload-api", "no identity from %s: %v", s.workloadAPI, err)
		}
		if svid, err := src.GetX509SVID(); err == nil {
			m.ObserveCertificate(svid.Certificates[0])
		}
		return src, func(ctx context.Context) error { <-ctx.Done(); return nil }, func() { src.Close() }, nil
	}
	return nil, nil, nil, flagError("identity-dir", "required: --identity-dir DIR or --workload-api unix:///PATH")
}

// revocationFlags point the proxy at the CA's revocation feed and CRL.
type revocationFlags struct {
	ca           []string
	crlInterval  time.Duration
	noRevocation bool
}

func (r *revocationFlags) register(c *cobra.Command) {
	c.Flags().StringSliceVar(&r.ca, "ca", nil, "CA URL for revocation (push feed, CRL fallback); default: the identity directory's mutual.json, else the CRL or OCSP address in the proxy's own certificate")
	c.Flags().DurationVar(&r.crlInterval, "crl-interval", 30*time.Second, "how often to fetch the CRL while the push feed is down (or when only a CRL is known)")
	c.Flags().BoolVar(&r.noRevocation, "no-revocation", false, "run without any revocation check: revoked certificates are accepted until they expire (mutual audit reports it)")
}

// watcher builds the revocation watcher from the first source found: --ca,
// the identity directory's mutual.json, or the CRL distribution point or
// OCSP address in the proxy's own certificate. Without one the proxy does
// not start, unless --no-revocation says so (then it returns nil).
func (r *revocationFlags) watcher(src certSource, identityDir string, log *slog.Logger) (*revocation.Watcher, error) {
	if r.noRevocation {
		if len(r.ca) > 0 {
			return nil, flagError("no-revocation", "give --ca or --no-revocation, not both")
		}
		log.Warn("revocation checks are off (--no-revocation): revoked certificates are accepted until they expire")
		return nil, nil
	}
	w := &revocation.Watcher{CAURLs: r.ca, Source: src, CRLInterval: r.crlInterval, Log: log}
	from := "--ca"
	if len(w.CAURLs) == 0 && identityDir != "" {
		urls, err := client.LoadCAURLs(identityDir)
		if err != nil {
			return nil, flagError("identity-dir", "%v", err)
		}
		w.CAURLs, from = urls, filepath.Join(identityDir, client.ServersFile)
	}
	if len(w.CAURLs) == 0 {
		svid, err := src.GetX509SVID()
		if err != nil {
			return nil, fmt.Errorf("the proxy's certificate: %w", err)
		}
		if len(svid.Certificates) > 1 {
			w.CAURLs, w.CRLURL = revocation.SourceFromCertificate(svid.Certificates[0], svid.Certificates[1])
		}
		from = "the proxy's certificate"
	}
	if len(w.CAURLs) == 0 && w.CRLURL == "" {
		return nil, flagError("ca", "no revocation source: no --ca, no %s in the identity directory, and the proxy's certificate names no CRL or OCSP address; "+
			"give --ca https://CA:PORT, or --no-revocation to accept revoked certificates until they expire", client.ServersFile)
	}
	log.Info("revocation source", "from", from, "ca", strings.Join(w.CAURLs, ","), "crl", w.CRLURL)
	return w, nil
}

// limitFlags are the production limits.
type limitFlags struct{ l proxy.Limits }

func (f *limitFlags) register(c *cobra.Command) {
	fl := c.Flags()
	fl.DurationVar(&f.l.HandshakeTimeout, "handshake-timeout", 10*time.Second, "time allowed for a TLS handshake")
	fl.DurationVar(&f.l.IdleTimeout, "idle-timeout", 5*time.Minute, "close connections idle this long")
	fl.IntVar(&f.l.MaxConnections, "max-connections", 10000, "refuse connections past this many")
	fl.DurationVar(&f.l.DrainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM, wait this long for live connections, then close them (both legs)")
	fl.DurationVar(&f.l.HalfCloseTimeout, "half-close-timeout", 30*time.Second, "tcp mode: once one side has finished sending, close the connection after this long with no traffic")
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

type inboundOptions struct {
	sourceFlags
	limitFlags
	revocationFlags
	listen, target string
	allow          []string
	policy         string
	mode, protocol string
	tls12          bool
	metrics        string
	unsafeTarget   bool
}

func proxyInboundCmd(e *env) *cobra.Command {
	var o inboundOptions
	c := &cobra.Command{
		Use:   "inbound",
		Short: "Terminate mutual TLS in front of a plaintext service and authorize callers by SPIFFE ID",
		Long: `Terminate mutual TLS on --listen, verify every client's certificate (chain, validity,
SPIFFE ID) and authorize it before a byte reaches --target.

  --mode strict       no certificate, no connection (default)
  --mode permissive   optional mTLS for migrations: clients without a certificate
                      (TLS or plaintext) get through and are listed at /migration
                      on the metrics listener; a client with a certificate is
                      verified and authorized exactly as in strict mode
  --protocol http     per-request authorization (method, path by segments),
                      ambiguous paths (/a/..;/b, %252e...) are 400, refusals
                      are 403 with a reason, the caller's identity reaches the
                      service in X-Forwarded-Client-Cert (Envoy's format)

Patterns: spiffe://td/ns/prod/web, spiffe://td/ns/prod/* (one segment),
spiffe://td/ns/** (any depth). --policy FILE (YAML) reloads on change.

Revocation is checked against --ca, else the identity directory's mutual.json,
else the CRL or OCSP address in the proxy's own certificate; without any the
proxy does not start unless --no-revocation. While the status cannot be known
(CA unreachable past the last CRL's nextUpdate) every client is refused.`,
		Example: `  mutual proxy inbound --listen :8443 --target 127.0.0.1:8080 --identity-dir /etc/mutual/web \
      --allow 'spiffe://example.org/ns/prod/*' --protocol http --metrics 127.0.0.1:9102`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.listen == "" {
				return flagError("listen", "required: the address to accept mTLS on")
			}
			if o.target == "" {
				return flagError("target", "required: the plaintext service, host:port")
			}
			if !isLoopback(o.target) && !o.unsafeTarget {
				return flagError("target", "%s is not a loopback address: the proxy's leg to the service is plaintext; pass --unsafe-target if the network between them is trusted", o.target)
			}
			if len(o.allow) == 0 && o.policy == "" {
				return flagError("allow", "no --allow or --policy: nobody would be allowed; give at least one SPIFFE ID pattern")
			}
			base, err := authz.FromPatterns(o.allow)
			if err != nil {
				return flagError("allow", "%v", err)
			}
			log := e.logger(slog.LevelInfo).With("proxy", "inbound", "listen", o.listen)
			reg := prometheus.NewRegistry()
			m := proxy.NewMetrics(reg, "inbound")
			var pol proxy.PolicySource = proxy.StaticPolicy{P: base}
			var pf *proxy.PolicyFile
			if o.policy != "" {
				if pf, err = proxy.LoadPolicyFile(o.policy, base, log, m); err != nil {
					return err
				}
				pol = pf
			}
			ctx := cmd.Context()
			src, runSrc, closeSrc, err := o.open(ctx, log, m)
			if err != nil {
				return err
			}
			defer closeSrc()
			mig := proxy.NewMigrationReport()
			cfg := proxy.InboundConfig{
				Target: o.target, SVID: src, Bundle: src, Policy: pol,
				Mode: proxy.Mode(o.mode), Protocol: proxy.Protocol(o.protocol), TLS12: o.tls12,
				Limits: o.l, Log: log, Metrics: m, Migration: mig,
			}
			w, err := o.watcher(src, o.identityDir, log)
			if err != nil {
				return err
			}
			var stapler *revocation.Stapler
			if w != nil {
				cfg.PeerCheck = w.Check
				stapler = &revocation.Stapler{Source: src, Revoked: w.Revoked, Log: log}
				cfg.Staple = stapler.Staple
			}
			p, err := proxy.NewInbound(cfg)
			if err != nil {
				return err
			}
			if w != nil {
				closeConns := closeRevoked(p, log)
				w.OnRevoke = func(e revocation.Event) {
					closeConns(e)
					stapler.Revoke(e)
				}
				runSrc = alsoRun(runSrc, w.Run, stapler.Run)
			}
			ln, err := net.Listen("tcp", o.listen)
			if err != nil {
				return flagError("listen", "%v", err)
			}
			extra := map[string]http.Handler{"/migration": mig}
			return runProxy(ctx, log, o.metrics, reg, extra, runSrc, pf, func(ctx context.Context) error { return p.Serve(ctx, ln) },
				"mode", o.mode, "protocol", o.protocol, "target", o.target)
		},
	}
	o.sourceFlags.register(c)
	o.limitFlags.register(c)
	o.revocationFlags.register(c)
	f := c.Flags()
	f.StringVar(&o.listen, "listen", "", "address to accept mTLS on (required)")
	f.StringVar(&o.target, "target", "", "plaintext service host:port (required; loopback unless --unsafe-target)")
	f.StringSliceVar(&o.allow, "allow", nil, "SPIFFE ID or pattern allowed to connect (repeatable)")
	f.StringVar(&o.policy, "policy", "", "YAML policy file, reloaded on change")
	f.StringVar(&o.mode, "mode", "strict", "strict or permissive")
	f.StringVar(&o.protocol, "protocol", "tcp", "tcp or http")
	f.BoolVar(&o.tls12, "tls12", false, "also accept TLS 1.2 (AEAD suites only); TLS 1.3 otherwise")
	f.StringVar(&o.metrics, "metrics", "", "address for /metrics and /migration (off when empty)")
	f.BoolVar(&o.unsafeTarget, "unsafe-target", false, "allow a non-loopback --target (plaintext crosses the network)")
	return c
}

type outboundOptions struct {
	sourceFlags
	limitFlags
	revocationFlags
	listen, target string
	expect         []string
	serverName     string
	tls12          bool
	metrics        string
	unsafeListen   bool
}

func proxyOutboundCmd(e *env) *cobra.Command {
	var o outboundOptions
	c := &cobra.Command{
		Use:   "outbound",
		Short: "Let a plaintext client reach an mTLS service: listen on loopback, originate mutual TLS",
		Long: `Accept plaintext connections on --listen (loopback) and relay each over mutual TLS to
--target, presenting this proxy's identity. The server is authenticated as SPIFFE
peers are: its certificate must verify against the bundle (of the server's trust
domain) and its SPIFFE ID must match an --expect pattern; it needs no DNS or IP
name, so --target may be any address. Give the server's exact SPIFFE ID: a pattern
such as spiffe://example.org/** would accept any workload as the server.
--server-name, when given, must also be in the certificate as a DNS or IP SAN.`,
		Example: `  mutual proxy outbound --listen 127.0.0.1:9000 --target db.internal:8443 \
      --identity-dir /etc/mutual/web --expect spiffe://example.org/ns/prod/db`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.listen == "" {
				return flagError("listen", "required: a loopback address such as 127.0.0.1:9000")
			}
			if !isLoopback(o.listen) && !o.unsafeListen {
				return flagError("listen", "%s is not a loopback address: plaintext would be accepted from the network; pass --unsafe-listen to do it anyway", o.listen)
			}
			if o.target == "" {
				return flagError("target", "required: the mTLS server, host:port")
			}
			if len(o.expect) == 0 {
				return flagError("expect", "required: the SPIFFE ID or pattern the server must have")
			}
			var pats []authz.Pattern
			for _, s := range o.expect {
				p, err := authz.ParsePattern(s)
				if err != nil {
					return flagError("expect", "%v", err)
				}
				pats = append(pats, p)
			}
			log := e.logger(slog.LevelInfo).With("proxy", "outbound", "listen", o.listen)
			reg := prometheus.NewRegistry()
			m := proxy.NewMetrics(reg, "outbound")
			ctx := cmd.Context()
			src, runSrc, closeSrc, err := o.open(ctx, log, m)
			if err != nil {
				return err
			}
			defer closeSrc()
			cfg := proxy.OutboundConfig{
				Target: o.target, ServerName: o.serverName, Expect: pats, SVID: src, Bundle: src,
				TLS12: o.tls12, Limits: o.l, Log: log, Metrics: m,
			}
			w, err := o.watcher(src, o.identityDir, log)
			if err != nil {
				return err
			}
			if w != nil {
				cfg.PeerCheck = w.Check
			}
			p, err := proxy.NewOutbound(cfg)
			if err != nil {
				return err
			}
			if w != nil {
				w.OnRevoke = closeRevoked(p, log)
				runSrc = alsoRun(runSrc, w.Run)
			}
			ln, err := net.Listen("tcp", o.listen)
			if err != nil {
				return flagError("listen", "%v", err)
			}
			return runProxy(ctx, log, o.metrics, reg, nil, runSrc, nil, func(ctx context.Context) error { return p.Serve(ctx, ln) },
				"target", o.target, "expect", strings.Join(o.expect, ","))
		},
	}
	o.sourceFlags.register(c)
	o.limitFlags.register(c)
	o.revocationFlags.register(c)
	f := c.Flags()
	f.StringVar(&o.listen, "listen", "", "loopback address for plaintext clients (required)")
	f.StringVar(&o.target, "target", "", "mTLS server host:port (required)")
	f.StringSliceVar(&o.expect, "expect", nil, "SPIFFE ID or pattern the server must match (repeatable, required)")
	f.StringVar(&o.serverName, "server-name", "", "also require this DNS or IP name in the server certificate, and send it as SNI (default: none; the SPIFFE ID authenticates the server)")
	f.BoolVar(&o.tls12, "tls12", false, "also allow TLS 1.2")
	f.StringVar(&o.metrics, "metrics", "", "address for /metrics (off when empty)")
	f.BoolVar(&o.unsafeListen, "unsafe-listen", false, "allow a non-loopback --listen")
	return c
}

// closeRevoked closes a proxy's live connections authenticated with a
// certificate just revoked, and logs it.
func closeRevoked(p interface {
	CloseConnections(func(spiffeid.ID, string) bool) int
}, log *slog.Logger) func(revocation.Event) {
	return func(e revocation.Event) {
		n := p.CloseConnections(func(_ spiffeid.ID, serial string) bool { return serial == e.Serial })
		log.Warn("certificate revoked", "serial", e.Serial, "peer_id", e.SPIFFEID, "reason", ca.ReasonName(e.Reason), "connections_closed", n)
	}
}

// alsoRun combines run functions: the first runs in the caller's goroutine
// (as runProxy expects), the others alongside.
func alsoRun(first func(context.Context) error, more ...func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		for _, f := range more {
			go f(ctx)
		}
		return first(ctx)
	}
}

// runProxy runs the proxy, its certificate source, its policy file and its
// metrics listener until ctx is done, then drains.
func runProxy(ctx context.Context, log *slog.Logger, metricsAddr string, reg *prometheus.Registry, extra map[string]http.Handler,
	runSrc func(context.Context) error, pf *proxy.PolicyFile, serve func(context.Context) error, attrs ...any) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go runSrc(ctx)
	if pf != nil {
		go pf.Run(ctx, time.Second)
	}
	if metricsAddr != "" {
		stop, bound, err := serveMetrics(metricsAddr, reg, extra)
		if err != nil {
			return err
		}
		defer stop()
		attrs = append(attrs, "metrics", "http://"+bound+"/metrics")
	}
	log.Info("proxy listening", attrs...)
	err := serve(ctx)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	log.Info("proxy stopped")
	return nil
}
