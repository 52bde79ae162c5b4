package cli

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/dashboard"
)

type dashboardOptions struct {
	adminFlags
	listen         string
	tlsIdentityDir string
	logKey         string
	proxies        []string
}

func dashboardCmd(e *env) *cobra.Command {
	var o dashboardOptions
	c := &cobra.Command{
		Use:   "dashboard",
		Short: "Serve a web UI for operators: certificates, identities, expiry, revocations (admin)",
		Long: `Serve the operator's dashboard: live certificates by kind and when they expire,
recent revocations, CA and CRL health, certificate search and revocation,
identities, registration entries, join tokens, nodes, the issuance log and
its monitor's findings, and (with --proxy) who still connects to each
permissive proxy without a certificate.

It runs beside you, like "kubectl proxy": it asks the CA with your admin
identity, and serves plain HTTP on a loopback address only. To listen beyond
loopback, pass --tls-identity-dir: it then serves HTTPS and admits only
browsers presenting an admin client certificate.`,
		Example: `  mutual dashboard --identity-dir ca/admin --listen 127.0.0.1:8780 --proxy web=http://10.0.0.5:9102/migration
  # then open http://127.0.0.1:8780/`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := o.client()
			if err != nil {
				return err
			}
			admin, err := identity.Load(o.identityDir)
			if err != nil {
				return flagError("identity-dir", "%v", err)
			}
			cfg := dashboard.Config{CA: cl, Identity: admin, Log: e.logger(slog.LevelInfo)}
			if o.tlsIdentityDir != "" {
				if cfg.TLS, err = identity.Load(o.tlsIdentityDir); err != nil {
					return flagError("tls-identity-dir", "%v", err)
				}
			}
			for _, p := range o.proxies {
				px, err := dashboard.ParseProxy(p)
				if err != nil {
					return flagError("proxy", "%v", err)
				}
				cfg.Proxies = append(cfg.Proxies, px)
			}
			if o.logKey != "" {
				b, err := os.ReadFile(o.logKey)
				if err != nil {
					return flagError("log-key", "%v", err)
				}
				cfg.LogKey = strings.TrimSpace(string(b))
			}
			d, err := dashboard.New(cfg)
			if err != nil {
				return err
			}
			ln, err := dashboard.Listen(o.listen, cfg.TLS)
			if err != nil {
				return err
			}
			scheme := "http"
			if cfg.TLS != nil {
				scheme = "https"
			}
			fmt.Fprintf(e.stderr, "dashboard: %s://%s/ (as %s)\n", scheme, ln.Addr(), admin.ID)
			return d.Serve(cmd.Context(), ln)
		},
	}
	o.register(c)
	f := c.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:8780", "address to serve the dashboard on (loopback unless --tls-identity-dir)")
	f.StringVar(&o.tlsIdentityDir, "tls-identity-dir", "", "identity directory to serve HTTPS with; browsers must then present an admin client certificate (required beyond loopback)")
	f.StringArrayVar(&o.proxies, "proxy", nil, "a proxy's migration report, NAME=URL (its --metrics address + /migration; https is read with mTLS), for the migration page; repeat per proxy")
	f.StringVar(&o.logKey, "log-key", "", "the issuance log's verifier key as ca init wrote it (CA_DIR/log.pub), to pin the checkpoint's signature")
	return c
}
