package cli

import (
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/loopback"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/sidecar"
	"github.com/mutual-tls/mutual/internal/watch"
)

func proxyCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "proxy",
		Short: "Put mutual TLS in front of a service (inbound) or under a client (outbound)",
	}
	c.AddCommand(proxyInboundCmd(e), proxyOutboundCmd(e))
	return c
}

// commonFlags are the flags both directions share: where the certificate
// and revocation come from, the production limits, TLS 1.2, metrics.
type commonFlags struct {
	source     sidecar.Source
	revocation sidecar.Revocation
	limits     proxy.Limits
	tls12      bool
	metrics    string
	poll       time.Duration
}

func (f *commonFlags) register(c *cobra.Command) {
	fl := c.Flags()
	fl.StringVar(&f.source.IdentityDir, "identity-dir", "", "identity directory (cert.pem, key.pem, bundle.pem), followed as it is rewritten")
	fl.StringVar(&f.source.WorkloadAPI, "workload-api", "", "SPIFFE Workload API socket, e.g. unix:///run/mutual/agent.sock (default $SPIFFE_ENDPOINT_SOCKET when --identity-dir is not given)")
	registerRevocation(c, &f.revocation)
	fl.DurationVar(&f.limits.HandshakeTimeout, "handshake-timeout", 10*time.Second, "time allowed for a TLS handshake")
	fl.DurationVar(&f.limits.IdleTimeout, "idle-timeout", 5*time.Minute, "close connections idle this long; in http mode also the longest wait for each read and write of a request or response and for the service's answer (then 504)")
	fl.IntVar(&f.limits.MaxConnections, "max-connections", 10000, "refuse connections past this many")
	fl.DurationVar(&f.limits.DrainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM, wait this long for live connections, then close them (both legs)")
	fl.DurationVar(&f.poll, "poll-interval", watch.DefaultInterval, "how often the identity directory and --policy file are checked for changes (SIGHUP checks at once)")
	fl.DurationVar(&f.limits.HalfCloseTimeout, "half-close-timeout", 30*time.Second, "tcp mode: once one side has finished sending, close the connection after this long with no traffic")
}

// config is the sidecar configuration the common flags describe.
func (f *commonFlags) config(e *env, listen string) sidecar.Config {
	src := f.source
	src.WorkloadAPI = workloadAPIOrEnv(src.IdentityDir, src.WorkloadAPI)
	return sidecar.Config{
		Source: src, Revocation: f.revocation, Listen: listen, Metrics: f.metrics,
		Limits: f.limits, TLS12: f.tls12, Log: e.logger(slog.LevelInfo),
		PollInterval: f.poll, Reload: e.reload,
	}
}

// registerRevocation adds the flags that say where a service learns of
// revoked certificates.
func registerRevocation(c *cobra.Command, r *sidecar.Revocation) {
	fl := c.Flags()
	fl.StringSliceVar(&r.CAURLs, "ca", nil, "CA URL for revocation (push feed, CRL fallback); default: the identity directory's mutual.json, else the CRL or OCSP address in the service's own certificate")
	fl.DurationVar(&r.CRLInterval, "crl-interval", 30*time.Second, "how often to fetch the CRL while the push feed is down (or when only a CRL is known)")
	fl.BoolVar(&r.Off, "no-revocation", false, "run without any revocation check: revoked certificates are accepted until they expire (mutual audit reports it)")
}

type inboundOptions struct {
	commonFlags
	listen, target string
	allow          []string
	policy         string
	mode, protocol string
	unsafeTarget   bool
	requestLog     int
}

const proxyInboundLong = `Terminate mutual TLS on --listen, verify every client's certificate (chain, validity,
SPIFFE ID) and authorize it before a byte reaches --target.

  --mode strict       no certificate, no connection (default)
  --mode permissive   optional mTLS for migrations: clients without a certificate
                      (TLS or plaintext) get through and are listed at /migration
                      on the metrics listener; a client with a certificate is
                      verified and authorized exactly as in strict mode
  --protocol http     per-request authorization (method, path by segments),
                      ambiguous paths (/a/..;/b, %252e...) are 400, refusals
                      are 403 with a reason, the caller's identity reaches the
                      service in X-Forwarded-Client-Cert (Envoy's format);
                      forwarded requests are logged up to --request-log-limit
                      a second (refusals always; metrics count every request)

Patterns: spiffe://td/ns/prod/web, spiffe://td/ns/prod/* (one segment),
spiffe://td/ns/** (any depth). --policy FILE (YAML) reloads on change.

Revocation is checked against --ca, else the identity directory's mutual.json,
else the CRL or OCSP address in the proxy's own certificate; without any the
proxy does not start unless --no-revocation. While the status cannot be known
(CA unreachable past the last CRL's nextUpdate) every client is refused.`

func proxyInboundCmd(e *env) *cobra.Command {
	var o inboundOptions
	c := &cobra.Command{
		Use:   "inbound",
		Short: "Terminate mutual TLS in front of a plaintext service and authorize callers by SPIFFE ID",
		Long:  proxyInboundLong,
		Example: `  mutual proxy inbound --listen :8443 --target 127.0.0.1:8080 --identity-dir /etc/mutual/web \
      --allow 'spiffe://example.org/ns/prod/*' --protocol http --metrics 127.0.0.1:9102`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.config(e)
			if err != nil {
				return err
			}
			return sidecar.Run(cmd.Context(), cfg)
		},
	}
	o.commonFlags.register(c)
	f := c.Flags()
	f.StringVar(&o.listen, "listen", "", "address to accept mTLS on (required)")
	f.StringVar(&o.target, "target", "", "plaintext service host:port (required; loopback unless --unsafe-target)")
	f.StringSliceVar(&o.allow, "allow", nil, "SPIFFE ID or pattern allowed to connect (repeatable)")
	f.StringVar(&o.policy, "policy", "", "YAML policy file, reloaded on change")
	f.StringVar(&o.mode, "mode", "strict", "strict or permissive")
	f.StringVar(&o.protocol, "protocol", "tcp", "tcp or http")
	f.IntVar(&o.requestLog, "request-log-limit", 0, "forwarded requests (http mode) or relayed connections (tcp mode; as many again for those without mTLS; connections closed by revocation or drain are all logged) logged per second, the others counted in one line (0: 100; -1: every one)")
	f.BoolVar(&o.tls12, "tls12", false, "also accept TLS 1.2 (AEAD suites only); TLS 1.3 otherwise")
	f.StringVar(&o.metrics, "metrics", "", "address for /metrics and /migration (off when empty)")
	f.BoolVar(&o.unsafeTarget, "unsafe-target", false, "allow a non-loopback --target (plaintext crosses the network)")
	return c
}

// config checks the inbound flags and turns them into a sidecar.
func (o *inboundOptions) config(e *env) (sidecar.Config, error) {
	if o.listen == "" {
		return sidecar.Config{}, flagError("listen", "required: the address to accept mTLS on")
	}
	if o.target == "" {
		return sidecar.Config{}, flagError("target", "required: the plaintext service, host:port")
	}
	if !loopback.Is(o.target) && !o.unsafeTarget {
		return sidecar.Config{}, flagError("target", "%s is not a loopback address: the proxy's leg to the service is plaintext; pass --unsafe-target if the network between them is trusted", o.target)
	}
	if len(o.allow) == 0 && o.policy == "" {
		return sidecar.Config{}, flagError("allow", "no --allow or --policy: nobody would be allowed; give at least one SPIFFE ID pattern")
	}
	base, err := authz.FromPatterns(o.allow)
	if err != nil {
		return sidecar.Config{}, flagError("allow", "%v", err)
	}
	cfg := o.commonFlags.config(e, o.listen)
	cfg.Inbound = &sidecar.Inbound{
		Target: o.target, Allow: base, PolicyFile: o.policy,
		Mode: proxy.Mode(o.mode), Protocol: proxy.Protocol(o.protocol), RequestLogLimit: o.requestLog,
	}
	return cfg, nil
}

type outboundOptions struct {
	commonFlags
	listen, target string
	expect         []string
	serverName     string
	unsafeListen   bool
}

const proxyOutboundLong = `Accept plaintext connections on --listen (loopback) and relay each over mutual TLS to
--target, presenting this proxy's identity. The server is authenticated as SPIFFE
peers are: its certificate must verify against the bundle (of the server's trust
domain) and its SPIFFE ID must match an --expect pattern; it needs no DNS or IP
name, so --target may be any address. Give the server's exact SPIFFE ID: a pattern
such as spiffe://example.org/** would accept any workload as the server.
--server-name, when given, must also be in the certificate as a DNS or IP SAN.`

func proxyOutboundCmd(e *env) *cobra.Command {
	var o outboundOptions
	c := &cobra.Command{
		Use:   "outbound",
		Short: "Let a plaintext client reach an mTLS service: listen on loopback, originate mutual TLS",
		Long:  proxyOutboundLong,
		Example: `  mutual proxy outbound --listen 127.0.0.1:9000 --target db.internal:8443 \
      --identity-dir /etc/mutual/web --expect spiffe://example.org/ns/prod/db`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.config(e)
			if err != nil {
				return err
			}
			return sidecar.Run(cmd.Context(), cfg)
		},
	}
	o.commonFlags.register(c)
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

// config checks the outbound flags and turns them into a sidecar.
func (o *outboundOptions) config(e *env) (sidecar.Config, error) {
	if o.listen == "" {
		return sidecar.Config{}, flagError("listen", "required: a loopback address such as 127.0.0.1:9000")
	}
	if !loopback.Is(o.listen) && !o.unsafeListen {
		return sidecar.Config{}, flagError("listen", "%s is not a loopback address: plaintext would be accepted from the network; pass --unsafe-listen to do it anyway", o.listen)
	}
	if o.target == "" {
		return sidecar.Config{}, flagError("target", "required: the mTLS server, host:port")
	}
	if len(o.expect) == 0 {
		return sidecar.Config{}, flagError("expect", "required: the SPIFFE ID or pattern the server must have")
	}
	var pats []authz.Pattern
	for _, s := range o.expect {
		p, err := authz.ParsePattern(s)
		if err != nil {
			return sidecar.Config{}, flagError("expect", "%v", err)
		}
		pats = append(pats, p)
	}
	cfg := o.commonFlags.config(e, o.listen)
	cfg.Outbound = &sidecar.Outbound{Target: o.target, ServerName: o.serverName, Expect: pats}
	return cfg, nil
}
