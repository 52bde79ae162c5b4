package cli

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/revocation/publish"
)

type serverOptions struct {
	dir            string
	passphraseFile string
	listen         string
	storeFlags
	metrics      string
	urls         []string
	httpListen   string
	httpURL      string
	debug        bool
	feedMax      int
	feedMaxPerID int
}

func serverCmd(e *env) *cobra.Command {
	var o serverOptions
	c := &cobra.Command{
		Use:   "server",
		Short: "Run the CA service: enrollment, renewal, tokens, revocation (HTTPS JSON API under /v1/)",
		Long: `Run the CA service for the CA in --dir.

The API is HTTPS and JSON under /v1/; admin endpoints need the operator's client
certificate (DIR/admin). State lives in --store: sqlite:PATH (default DIR/mutual.db)
or postgres://USER@HOST/DB shared by several replicas; give a password through
PGPASSWORD or PGPASSFILE, or the whole URL through --store-file or $MUTUAL_STORE,
never on the command line. Prometheus metrics are
served on --metrics, a separate listener. Logs are JSON lines on stderr.`,
		Example: `  mutual server --dir ./ca --passphrase-file pass --metrics 127.0.0.1:9090`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.dir == "" {
				return flagError("dir", "required: the CA directory made by `mutual ca init`")
			}
			pass, err := readPassphrase(o.passphraseFile)
			if err != nil {
				return err
			}
			level := slog.LevelInfo
			if o.debug {
				level = slog.LevelDebug
			}
			log := e.logger(level)
			storeURL, err := o.storeFlags.url(log)
			if err != nil {
				return err
			}
			svc, err := caservice.Open(cmd.Context(), caservice.Options{
				Dir: o.dir, Passphrase: pass, Listen: o.listen, StoreURL: storeURL,
				MetricsListen: o.metrics, URLs: o.urls, Log: log, HTTPListen: o.httpListen, HTTPURL: o.httpURL,
				FeedMaxStreams: o.feedMax, FeedMaxStreamsPerIdentity: o.feedMaxPerID, Reload: e.reload,
			})
			if err != nil {
				return err
			}
			defer svc.Close()
			attrs := []any{"url", svc.URL, "store", svc.Store.Kind(), "trust_domain", svc.Authority.Policy.TrustDomain.Name()}
			if h := svc.HTTPAddr(); h != nil {
				attrs = append(attrs, "crl_ocsp", "http://"+h.String())
			}
			if m := svc.MetricsAddr(); m != nil {
				attrs = append(attrs, "metrics", fmt.Sprintf("http://%s/metrics", m))
			}
			log.Info("CA service listening", attrs...)
			err = svc.Run(cmd.Context())
			log.Info("CA service stopped")
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&o.dir, "dir", "", "CA directory made by mutual ca init (required)")
	f.StringVar(&o.passphraseFile, "passphrase-file", "", "file holding the CA keys' passphrase (required)")
	f.StringVar(&o.listen, "listen", caservice.DefaultListen, "address of the HTTPS API")
	o.storeFlags.register(c, "sqlite:PATH or postgres://USER@HOST/DB (default sqlite:DIR/mutual.db)")
	f.StringVar(&o.metrics, "metrics", "", "address for Prometheus /metrics (off when empty)")
	f.StringSliceVar(&o.urls, "url", nil, "public https URL of this CA, written into join tokens (repeatable; default from --listen)")
	f.StringVar(&o.httpListen, "http-listen", "", "also serve the CRL and OCSP over plain HTTP here; certificates then point at it")
	f.StringVar(&o.httpURL, "http-url", "", "public base URL of --http-listen (default http://ADDR)")
	f.BoolVar(&o.debug, "debug", false, "log at debug level (TLS handshake errors included)")
	f.IntVar(&o.feedMax, "feed-max-streams", publish.DefaultMaxStreams, "most revocation feed streams open at once; more are refused with 503")
	f.IntVar(&o.feedMaxPerID, "feed-max-streams-per-identity", publish.DefaultMaxStreamsPerPeer, "most revocation feed streams one SPIFFE ID may hold open; more are refused with 429")
	return c
}
