package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/translog"
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

func (l *logFlags) httpClient() (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if l.bundle != "" {
		roots, err := pki.ReadCertificates(l.bundle)
		if err != nil {
			return nil, flagError("bundle", "%v", err)
		}
		cfg.RootCAs = pki.CertPool(roots)
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}, nil
}

func (l *logFlags) client(needKey bool) (*translog.Client, *translog.State, string, error) {
	if l.server == "" {
		return nil, nil, "", flagError("server", "required: the CA's URL")
	}
	hc, err := l.httpClient()
	if err != nil {
		return nil, nil, "", err
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
	if key == "" {
		key = st.VerifierKey
	}
	if key == "" && needKey {
		return nil, nil, "", flagError("key-file", "required: the log's verifier key (CA_DIR/log.pub), so that nothing depends on trusting the server")
	}
	if st.VerifierKey != "" && key != st.VerifierKey {
		return nil, nil, "", flagError("key", "differs from the key in %s; a log does not change its key: use another --state for another log", statePath)
	}
	st.VerifierKey = key
	return &translog.Client{Base: l.server, VerifierKey: key, HTTP: hc}, st, statePath, nil
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
			ctx := cmd.Context()
			cp, err := cl.Checkpoint(ctx)
			if err != nil {
				return fmt.Errorf("checkpoint: %w", err)
			}
			out := map[string]any{"tree_size": cp.Size, "root_hash": fmt.Sprintf("%x", cp.Hash[:])}
			if st.Checkpoint != "" {
				old, err := translog.OpenCheckpoint([]byte(st.Checkpoint), cl.VerifierKey)
				if err != nil {
					return fmt.Errorf("the checkpoint saved in %s: %w", statePath, err)
				}
				if err := cl.CheckConsistency(ctx, old, cp); err != nil {
					return fmt.Errorf("consistency with the checkpoint seen before (%d entries): %w", old.Size, err)
				}
				out["consistent_with"] = old.Size
			}
			if certFile != "" {
				certs, err := pki.ReadCertificates(certFile)
				if err != nil {
					return flagError("cert", "%v", err)
				}
				idx, entry, err := cl.ProveCertificate(ctx, cp, certs[0])
				if err != nil {
					return err
				}
				out["certificate_index"] = idx
				out["requested_by"] = entry.RequestedBy.String()
			}
			st.Checkpoint = string(cp.Note)
			if err := st.Save(statePath); err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(out)
			}
			fmt.Fprintf(e.stdout, "checkpoint verified: %d entries, root %x\n", cp.Size, cp.Hash[:])
			if v, ok := out["consistent_with"]; ok {
				fmt.Fprintf(e.stdout, "consistent with the %d-entry checkpoint seen before\n", v)
			}
			if v, ok := out["certificate_index"]; ok {
				fmt.Fprintf(e.stdout, "%s is entry %d (requested by %s), included in the checkpoint\n", certFile, v, out["requested_by"])
			}
			return nil
		},
	}
	l.register(c, true)
	c.Flags().StringVar(&certFile, "cert", "", "check that this certificate (PEM, first in file) is in the log")
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

// adminGrants explains identities from the CA's tokens and entries.
type adminGrants struct {
	tokens  map[string]string
	entries map[string]string
}

func (g *adminGrants) Explains(requestedBy translog.Requester, id string) string {
	var granted string
	var ok bool
	switch requestedBy.Kind() {
	case translog.RequestedByToken:
		granted, ok = g.tokens[requestedBy.Ref()]
	case translog.RequestedByEntry:
		granted, ok = g.entries[requestedBy.Ref()]
	}
	switch {
	case !ok:
		return fmt.Sprintf("%s is unknown to the CA", requestedBy)
	case granted != id:
		return fmt.Sprintf("%s granted %s, not %s", requestedBy, granted, id)
	}
	return ""
}

func loadGrants(ctx context.Context, a *adminFlags) (*adminGrants, error) {
	cl, err := a.client()
	if err != nil {
		return nil, err
	}
	defer cl.CloseIdleConnections()
	g := &adminGrants{tokens: map[string]string{}, entries: map[string]string{}}
	toks, err := cl.ListTokens(ctx)
	if err != nil {
		return nil, err
	}
	for _, t := range toks.Tokens {
		g.tokens[t.ID] = t.SPIFFEID
	}
	ents, err := cl.ListEntries(ctx)
	if err != nil {
		return nil, err
	}
	for _, en := range ents.Entries {
		g.entries[en.ID] = en.SPIFFEID
	}
	return g, nil
}

func logMonitorCmd(e *env) *cobra.Command {
	var l logFlags
	var admin adminFlags
	var rulesFile, metrics, issuerFile string
	var interval time.Duration
	var once bool
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
			cl, st, statePath, err := l.client(true)
			if err != nil {
				return err
			}
			var data []byte
			if rulesFile != "" {
				if data, err = os.ReadFile(rulesFile); err != nil {
					return flagError("rules", "%v", err)
				}
			}
			rules, err := translog.ParseRules(data)
			if err != nil {
				return flagError("rules", "%v", err)
			}
			if issuerFile != "" {
				certs, err := pki.ReadCertificates(issuerFile)
				if err != nil {
					return flagError("issuer", "%v", err)
				}
				rules.Issuers = append(rules.Issuers, fmt.Sprintf("%x", certs[0].SubjectKeyId))
			}
			log := e.logger(slog.LevelInfo).With("component", "log-monitor")
			reg := prometheus.NewRegistry()
			alerts := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mutual_log_monitor_alerts_total", Help: "Log entries or checkpoints the rules did not expect, by rule."}, []string{"rule"})
			size := prometheus.NewGauge(prometheus.GaugeOpts{Name: "mutual_log_monitor_entries_checked", Help: "Entries examined so far (the next index)."})
			reg.MustRegister(alerts, size)
			if metrics != "" {
				stop, _, err := serveMetrics(metrics, reg, nil)
				if err != nil {
					return err
				}
				defer stop()
			}
			m := &translog.Monitor{Client: cl, Rules: rules, State: st, Log: log, Alerts: alerts}
			ctx := cmd.Context()
			total := 0
			for {
				if admin.identityDir != "" {
					g, err := loadGrants(ctx, &admin)
					if err != nil {
						log.Warn("cannot read tokens and entries from the CA; identities are checked against the rules only", "error", err.Error())
						m.Grants = nil
					} else {
						m.Grants = g
					}
				}
				found, err := m.Step(ctx)
				total += len(found)
				size.Set(float64(st.Next))
				if serr := st.Save(statePath); serr != nil {
					return serr
				}
				if errors.Is(err, translog.ErrFork) || errors.Is(err, translog.ErrRollback) {
					return err
				}
				if err != nil {
					log.Warn("monitor step failed; retrying", "error", err.Error())
				}
				if once {
					log.Info("monitor pass done", "next_index", st.Next, "alerts", total)
					if total > 0 {
						return fmt.Errorf("%d alert(s): see the log lines above", total)
					}
					return err
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(interval):
				}
			}
		},
	}
	l.register(c, true)
	f := c.Flags()
	f.StringVar(&rulesFile, "rules", "", "YAML rules (defaults when empty)")
	f.StringVar(&issuerFile, "issuer", "", "the known intermediate certificate (CA_DIR/intermediate/cert.pem); default: the first issuer seen")
	f.StringVar(&admin.identityDir, "identity-dir", "", "an admin identity, to explain identities by the CA's tokens and entries")
	f.StringSliceVar(&admin.server, "admin-server", nil, "CA URL for the admin API (default: the identity directory's mutual.json)")
	f.StringVar(&metrics, "metrics", "", "address for Prometheus /metrics")
	f.DurationVar(&interval, "interval", 5*time.Second, "time between passes")
	f.BoolVar(&once, "once", false, "one pass, then exit (non-zero when there were alerts)")
	return c
}
