package cli

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/diagnose"
	"github.com/mutual-tls/mutual/internal/pki"
)

type diagnoseOptions struct {
	identityDir string
	certFile    string
	keyFile     string
	bundle      string
	expect      string
	serverName  string
	listen      string
	timeout     time.Duration
	noRevoke    bool
	json        bool
}

func diagnoseCmd(e *env) *cobra.Command {
	var o diagnoseOptions
	c := &cobra.Command{
		Use:   "diagnose HOST:PORT | --listen ADDR",
		Short: "Explain in plain words why a TLS connection fails, and how to fix it",
		Long: `Connect to HOST:PORT as a client would, step by step (DNS, TCP, TLS versions and
suites, the server's chain, the server's request for a client certificate and the
CA names it accepts, the client certificate, the server's verdict), and end with a
verdict and the fix. Exits 1 when the connection does not work.

The handshake is first probed without verification, to see what would fail; that
probe is labelled in the report and never decides the verdict, which comes from
independent checks against the trusted roots (--bundle, or the identity's own).

With --listen, run a one-off server that tells each connecting client what is
wrong with its certificate (curl and openssl see the answer; so does stdout).`,
		Example: `  mutual diagnose api.internal:8443 --identity-dir ./web --expect 'spiffe://example.org/ns/prod/*'
  mutual diagnose --listen 127.0.0.1:9443 --identity-dir ./api`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var chain []*x509.Certificate
			var key any
			var roots []*x509.Certificate
			var loadErr error
			switch {
			case o.identityDir != "":
				// Read the files one by one: a damaged identity (a key that does
				// not match) is something to diagnose, not a reason to stop.
				if chain, loadErr = pki.ReadCertificates(o.identityDir + "/" + identity.CertFile); loadErr != nil {
					return flagError("identity-dir", "%v", loadErr)
				}
				if b, err := os.ReadFile(o.identityDir + "/" + identity.KeyFile); err == nil {
					key, _ = pki.ParsePrivateKey(b, nil)
				}
				roots, _ = pki.ReadCertificates(o.identityDir + "/" + identity.BundleFile)
			case o.certFile != "" || o.keyFile != "":
				if o.certFile == "" || o.keyFile == "" {
					return flagError("cert", "give both --cert and --key")
				}
				var err error
				if chain, err = pki.ReadCertificates(o.certFile); err != nil {
					return flagError("cert", "%v", err)
				}
				b, err := os.ReadFile(o.keyFile)
				if err != nil {
					return flagError("key", "%v", err)
				}
				if key, err = pki.ParsePrivateKey(b, nil); err != nil {
					return flagError("key", "%v", err)
				}
			}
			if o.bundle != "" {
				var err error
				if roots, err = pki.ReadCertificates(o.bundle); err != nil {
					return flagError("bundle", "%v", err)
				}
			}
			if o.listen != "" {
				return runDiagnoseListen(cmd, e, o, chain, key, roots)
			}
			if len(args) != 1 {
				return errors.New("diagnose: give HOST:PORT to connect to, or --listen ADDR")
			}
			opts := diagnose.Options{Addr: args[0], ServerName: o.serverName, Roots: roots, ClientChain: chain, ClientKey: key, Timeout: o.timeout}
			if o.expect != "" {
				p, err := authz.ParsePattern(o.expect)
				if err != nil {
					return flagError("expect", "%v", err)
				}
				opts.Expect = &p
			}
			if !o.noRevoke {
				opts.Revoked = diagnose.OCSPRevoked(roots)
			}
			r := diagnose.Run(cmd.Context(), opts)
			if o.json {
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
		},
	}
	f := c.Flags()
	f.StringVar(&o.identityDir, "identity-dir", "", "client identity directory (cert.pem, key.pem, bundle.pem)")
	f.StringVar(&o.certFile, "cert", "", "client certificate chain (PEM)")
	f.StringVar(&o.keyFile, "key", "", "client private key (PEM)")
	f.StringVar(&o.bundle, "bundle", "", "trusted roots (PEM; default: the identity's bundle.pem, else the system's)")
	f.StringVar(&o.expect, "expect", "", "SPIFFE ID or pattern the server must have")
	f.StringVar(&o.serverName, "server-name", "", "DNS or IP name the server's certificate must carry (default: HOST, required only without --expect: SPIFFE clients authenticate the server by its ID)")
	f.StringVar(&o.listen, "listen", "", "run a one-off server here that explains each client's certificate")
	f.DurationVar(&o.timeout, "timeout", 5*time.Second, "time allowed for each network step")
	f.BoolVar(&o.noRevoke, "no-revocation", false, "skip the OCSP check of the client certificate")
	f.BoolVar(&o.json, "json", false, "print the report as JSON")
	return c
}

func runDiagnoseListen(cmd *cobra.Command, e *env, o diagnoseOptions, chain []*x509.Certificate, key any, roots []*x509.Certificate) error {
	if len(chain) == 0 || key == nil {
		return flagError("identity-dir", "--listen needs a server identity (--identity-dir, or --cert and --key)")
	}
	if len(roots) == 0 {
		return flagError("bundle", "--listen needs the roots client certificates should chain to")
	}
	tc := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return flagError("listen", "%v", err)
	}
	fmt.Fprintf(e.stdout, "mutual diagnose: listening on %s; connect a client to see what is wrong with its certificate (Ctrl-C stops)\n", ln.Addr())
	return diagnose.Listen(cmd.Context(), ln, tc, roots, e.stdout)
}
