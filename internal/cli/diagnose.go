package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/diagnose"
)

type diagnoseOptions struct {
	files      diagnose.Files
	expect     string
	serverName string
	alpn       []string
	method     string
	path       string
	listen     string
	timeout    time.Duration
	noRevoke   bool
	json       bool
}

// validate checks the flags and turns them into diagnose options.
func (o diagnoseOptions) validate(args []string) (diagnose.Options, error) {
	if o.files.IdentityDir == "" && (o.files.Cert != "") != (o.files.Key != "") {
		return diagnose.Options{}, flagError("cert", "give both --cert and --key")
	}
	if o.listen == "" && len(args) != 1 {
		return diagnose.Options{}, fmt.Errorf("diagnose: give HOST:PORT to connect to, or --listen ADDR")
	}
	opts := diagnose.Options{Files: o.files, ServerName: o.serverName, ALPN: o.alpn, Method: o.method, Path: o.path, Timeout: o.timeout, SkipRevocation: o.noRevoke}
	if len(args) == 1 {
		opts.Addr = args[0]
	}
	if o.expect != "" {
		p, err := authz.ParsePattern(o.expect)
		if err != nil {
			return diagnose.Options{}, flagError("expect", "%v", err)
		}
		opts.Expect = &p
	}
	return opts, nil
}

func diagnoseCmd(e *env) *cobra.Command {
	var o diagnoseOptions
	c := &cobra.Command{
		Use:   "diagnose HOST:PORT | --listen ADDR",
		Short: "Explain in plain words why a TLS connection fails, and how to fix it",
		Long: `Connect to HOST:PORT as a client would, step by step (the local files, DNS, TCP,
TLS versions, suites and ALPN, the server's chain and its revocation, the server's
request for a client certificate and the CA names it accepts, the client
certificate, the server's verdict, whether it enforces mutual TLS), and end with
one verdict, its evidence and the fix. When two causes fit the evidence, the
verdict is "undecided" and names the one test that tells them apart. Exits 1 when
the connection does not work.

The handshake is first probed without verification, to see what would fail; that
probe is labelled in the report and never decides the verdict, which comes from
independent checks against the trusted roots (--bundle, or the identity's own).

With --listen, run a one-off server that tells each connecting client what is
wrong with its certificate (curl and openssl see the answer; so does stdout).`,
		Example: `  mutual diagnose api.internal:8443 --identity-dir ./web --expect 'spiffe://example.org/ns/prod/*'
  mutual diagnose gw.internal:443 --identity-dir ./web --method POST --path /orders
  mutual diagnose --listen 127.0.0.1:9443 --identity-dir ./api`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := o.validate(args)
			if err != nil {
				return err
			}
			if o.listen != "" {
				return diagnose.ListenAddr(cmd.Context(), o.listen, o.files, e.stdout)
			}
			return e.printDiagnosis(diagnose.Run(cmd.Context(), opts), o.json)
		},
	}
	f := c.Flags()
	f.StringVar(&o.files.IdentityDir, "identity-dir", "", "client identity directory (cert.pem, key.pem, bundle.pem)")
	f.StringVar(&o.files.Cert, "cert", "", "client certificate chain (PEM)")
	f.StringVar(&o.files.Key, "key", "", "client private key (PEM)")
	f.StringVar(&o.files.Bundle, "bundle", "", "trusted roots (PEM; default: the identity's bundle.pem, else the system's)")
	f.StringVar(&o.expect, "expect", "", "SPIFFE ID or pattern the server must have")
	f.StringVar(&o.serverName, "server-name", "", "DNS or IP name the server's certificate must carry, sent as SNI (default: HOST, required only without --expect: SPIFFE clients authenticate the server by its ID)")
	f.StringSliceVar(&o.alpn, "alpn", nil, "application protocols the client offers (default h2,http/1.1)")
	f.StringVar(&o.method, "method", "GET", "HTTP method of the request sent to an HTTP server (to find which policy rule refuses it)")
	f.StringVar(&o.path, "path", "/", "HTTP path of the request sent to an HTTP server")
	f.StringVar(&o.listen, "listen", "", "run a one-off server here that explains each client's certificate")
	f.DurationVar(&o.timeout, "timeout", 5*time.Second, "time allowed for each network step")
	f.BoolVar(&o.noRevoke, "no-revocation", false, "skip the CRL and OCSP checks of both certificates")
	f.BoolVar(&o.json, "json", false, "print the report as JSON")
	return c
}

// printDiagnosis prints r and fails when the verdict is not ok.
func (e *env) printDiagnosis(r *diagnose.Report, asJSON bool) error {
	if asJSON {
		if err := e.printJSON(r); err != nil {
			return err
		}
	} else {
		r.WriteText(e.stdout)
	}
	if r.Verdict != diagnose.OK {
		return fmt.Errorf("%s: %s", r.Verdict, r.Explanation)
	}
	return nil
}
