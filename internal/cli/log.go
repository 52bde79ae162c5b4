package cli

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/metricsserver"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/translog"
	"github.com/mutual-tls/mutual/internal/translog/monitor"
)

func logCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "log",
		Short: "The issuance transparency log: its key, verification, and a monitor",
		Long: `Every certificate the CA issues is appended to an RFC 6962 Merkle tree before it is
returned. The CA publishes signed checkpoints (C2SP signed-note format) at
/log/checkpoint and the tree as C2SP tlog-tiles under /log/tile/. The log's key is
its own (CA_DIR/log/key.pem); its verifier key is CA_DIR/log.pub.`,
	}
	c.AddCommand(logKeyCmd(e), logVerifyCmd(e), logMonitorCmd(e))
	return c
}

// logFlags locate and authenticate a log.
type logFlags struct {
	server  string
	bundle  string
	key     string
	keyFile string
	state   string
}

func (l *logFlags) register(c *cobra.Command, withKey bool) {
	f := c.Flags()
	f.StringVar(&l.server, "server", "", "CA URL (https://HOST:PORT, or the http:// CRL/OCSP listener) (required)")
	f.StringVar(&l.bundle, "bundle", "", "roots to trust for an https --server (default: system roots)")
	if withKey {
		f.StringVar(&l.key, "key", "", "the log's verifier key (NAME+HASH+KEY, from CA_DIR/log.pub or mutual log key)")
		f.StringVar(&l.keyFile, "key-file", "", "file holding the log's verifier key (CA_DIR/log.pub)")
		f.StringVar(&l.state, "state", "", "state file remembering the last checkpoint seen (default: ~/.mutual/log-state.json)")
	}
}

// client makes the log client and loads the state the flags name. Without
// needKey a missing verifier key is fine (mutual log key fetches it).
func (l *logFlags) client(needKey bool) (*translog.Client, *translog.State, string, error) {
	if l.server == "" {
		return nil, nil, "", flagError("server", "required: the CA's URL")
	}
	var roots *x509.CertPool
	if l.bundle != "" {
		certs, err := pki.ReadCertificates(l.bundle)
		if err != nil {
			return nil, nil, "", flagError("bundle", "%v", err)
		}
		roots = pki.CertPool(certs)
	}
	statePath := l.state
	if statePath == "" {
		home, _ := os.UserHomeDir()
		statePath = filepath.Join(home, ".mutual", "log-state.json")
	}
	st, err := translog.LoadState(statePath)
	if err != nil {
		return nil, nil, "", flagError("state", "%v", err)
	}
	key := l.key
	if l.keyFile != "" {
		b, err := os.ReadFile(l.keyFile)
		if err != nil {
			return nil, nil, "", flagError("key-file", "%v", err)
		}
		key = strings.TrimSpace(string(b))
	}
	if err := st.UseKey(key); err != nil {
		return nil, nil, "", flagError("key", "%v in %s; a log does not change its key: use another --state for another log", err, statePath)
	}
	if st.VerifierKey == "" && needKey {
		return nil, nil, "", flagError("key-file", "required: the log's verifier key (CA_DIR/log.pub), so that nothing depends on trusting the server")
	}
	return translog.NewClient(l.server, roots, st.VerifierKey), st, statePath, nil
}

func logKeyCmd(e *env) *cobra.Command {
	var l logFlags
	c := &cobra.Command{
		Use:   "key",
		Short: "Print the log's note verifier key (one line)",
		Long: `Print the log's note verifier key as the server publishes it. Prefer the copy in
CA_DIR/log.pub, written by ca init: a key fetched from the server is only as
trustworthy as the connection you fetched it over.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, _, _, err := l.client(false)
			if err != nil {
				return err
			}
			key, err := cl.ServerKey(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, key)
			return nil
		},
	}
	l.register(c, false)
	return c
}

func logVerifyCmd(e *env) *cobra.Command {
	var l logFlags
	var certFile string
	var asJSON bool
	c := &cobra.Command{
		Use:   "verify",
		Short: "Check the log's checkpoint against the last one seen, and optionally that a certificate is in it",
		Long: `Fetch the log's latest checkpoint, verify its signature with the log's key, and check
that it extends the last checkpoint this client saw (kept in --state): a log that
shrank (rollback) or a different tree of the same size (fork) fails loudly.
With --cert, also check that the certificate is in the log: its entry is fetched,
authenticated against the tree, and proven included in the checkpoint.`,
		Example: `  mutual log verify --server http://ca.internal:8080 --key-file ca/log.pub --cert web/cert.pem`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, st, statePath, err := l.client(true)
			if err != nil {
				return err
			}
			var cert *x509.Certificate
			if certFile != "" {
				certs, err := pki.ReadCertificates(certFile)
				if err != nil {
					return flagError("cert", "%v", err)
				}
				cert = certs[0]
			}
			v, err := translog.Verify(cmd.Context(), cl, st, cert)
			if err != nil {
				return err
			}
			if err := st.Save(statePath); err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(v)
			}
			fmt.Fprintf(e.stdout, "checkpoint verified: %d entries, root %s\n", v.TreeSize, v.RootHash)
			if v.ConsistentWith != nil {
				fmt.Fprintf(e.stdout, "consistent with the %d-entry checkpoint seen before\n", *v.ConsistentWith)
			}
			if v.CertificateIndex != nil {
				fmt.Fprintf(e.stdout, "%s is entry %d (requested by %s), included in the checkpoint\n", certFile, *v.CertificateIndex, v.RequestedBy)
			}
			return nil
		},
	}
	l.register(c, true)
	c.Flags().StringVar(&certFile, "cert", "", "check that this certificate (PEM, first in file) is in the log")
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

// monitorOptions are the flags of mutual log monitor.
type monitorOptions struct {
	log                            logFlags
	admin                          adminFlags
	rulesFile, metrics, issuerFile string
	interval                       time.Duration
	once                           bool
}

// config turns the flags into the monitor's configuration, with a
// listener for its metrics when --metrics asks (monitor.Run closes it).
func (o *monitorOptions) config(e *env) (monitor.Config, error) {
	cl, st, statePath, err := o.log.client(true)
	if err != nil {
		return monitor.Config{}, err
	}
	rules, err := o.rules()
	if err != nil {
		return monitor.Config{}, err
	}
	cfg := monitor.Config{
		Client: cl, Rules: rules, State: st, StatePath: statePath, Interval: o.interval, Once: o.once,
		Log: e.logger(slog.LevelInfo).With("component", "log-monitor"),
	}
	if o.admin.identityDir != "" {
		cfg.Admin = func() (monitor.AdminAPI, error) { return o.admin.client() }
		cfg.Report = func(ctx context.Context, fs []api.Finding) error {
			cl, err := o.admin.client()
			if err != nil {
				return err
			}
			defer cl.CloseIdleConnections()
			return cl.ReportFindings(ctx, api.FindingsReport{Findings: fs})
		}
	}
	if o.metrics != "" {
		if cfg.MetricsListener, err = net.Listen("tcp", o.metrics); err != nil {
			return monitor.Config{}, flagError("metrics", "%v", err)
		}
		reg := prometheus.NewRegistry()
		metricsserver.RegisterRuntime(reg) // go_* and process_*, as every mutual /metrics
		cfg.Registerer, cfg.MetricsHandler = reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	}
	return cfg, nil
}

// rules reads --rules and adds the --issuer's key.
func (o *monitorOptions) rules() (*translog.Rules, error) {
	var data []byte
	if o.rulesFile != "" {
		var err error
		if data, err = os.ReadFile(o.rulesFile); err != nil {
			return nil, flagError("rules", "%v", err)
		}
	}
	rules, err := translog.ParseRules(data)
	if err != nil {
		return nil, flagError("rules", "%v", err)
	}
	if o.issuerFile != "" {
		certs, err := pki.ReadCertificates(o.issuerFile)
		if err != nil {
			return nil, flagError("issuer", "%v", err)
		}
		rules.Issuers = append(rules.Issuers, hex.EncodeToString(certs[0].SubjectKeyId))
	}
	return rules, nil
}

func logMonitorCmd(e *env) *cobra.Command {
	var o monitorOptions
	c := &cobra.Command{
		Use:   "monitor",
		Short: "Follow the log and report entries that policy did not expect",
		Long: `Follow the log from where the last run stopped (--state), checking each checkpoint
against the previous one, and report as JSON lines and Prometheus metrics
(mutual_log_monitor_alerts_total{rule}) every entry the rules did not expect:

  unexpected_identity      an identity outside the rules' identities patterns
  unexplained_identity     an identity no token or entry explains (with --identity-dir)
  dns_outside_suffixes     a DNS name outside dns_suffixes
  lifetime_above_policy    a lifetime above max_lifetime
  burst                    too many issuances for one identity or from one node in a window
  unknown_issuer           issued by a CA key that is not the known intermediate
  checkpoint_inconsistent  a checkpoint that does not extend the previous one

Rules (YAML, every field optional):
  identities: ["spiffe://example.org/**"]
  dns_suffixes: [".internal"]
  max_lifetime: 24h
  burst: {window: 1m, per_identity: 30, per_node: 500}
  issuers: ["<hex subject key id of the intermediate>"]`,
		Example: `  mutual log monitor --server http://ca.internal:8080 --key-file ca/log.pub --issuer ca/intermediate/cert.pem \
      --identity-dir ca/admin --rules monitor.yaml --metrics 127.0.0.1:9105`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.config(e)
			if err != nil {
				return err
			}
			return monitor.Run(cmd.Context(), cfg)
		},
	}
	o.log.register(c, true)
	f := c.Flags()
	f.StringVar(&o.rulesFile, "rules", "", "YAML rules (defaults when empty)")
	f.StringVar(&o.issuerFile, "issuer", "", "the known intermediate certificate (CA_DIR/intermediate/cert.pem); default: the first issuer seen")
	f.StringVar(&o.admin.identityDir, "identity-dir", "", "an admin identity, to explain identities by the CA's tokens and entries and to report findings to the CA (the dashboard shows them)")
	f.StringSliceVar(&o.admin.server, "admin-server", nil, "CA URL for the admin API (default: the identity directory's mutual.json)")
	f.StringVar(&o.metrics, "metrics", "", "address for Prometheus /metrics")
	f.DurationVar(&o.interval, "interval", 5*time.Second, "time between passes")
	f.BoolVar(&o.once, "once", false, "one pass, then exit (non-zero when there were alerts)")
	return c
}
