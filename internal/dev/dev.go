// Package dev runs the whole of mutual on loopback in one process, for a
// first look and for demos: a CA, its service on the embedded store, and a
// ready-to-use join token.
package dev

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"

	"github.com/mutual-tls/mutual/internal/atomicfile"
	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
)

// TrustDomain is the trust domain of a dev CA.
const TrustDomain = "dev.mutual.test"

// Options configure Run.
type Options struct {
	// Dir keeps the CA; empty means a temporary directory removed on exit.
	Dir string
	// Listen is the CA service's address; empty means a free loopback port.
	Listen string
	// Command is how the user runs mutual, for the printed next steps
	// ("mutual", or "go run ./cmd/mutual").
	Command string
	// Log receives the service's structured events; nil discards.
	Log *slog.Logger
	// Ready, if set, is called once the service and the demo run (tests use it).
	Ready func(*caservice.Service, *Demo)
	// NoDemo skips the proxies demo.
	NoDemo bool
}

// PassphraseFile is where a dev CA keeps its generated passphrase.
const PassphraseFile = "passphrase"

// TokenFile is where Run writes the printed demo join token (mode 0600),
// in the CA's directory.
const TokenFile = "hello.token"

// Run creates (or reuses) a dev CA, serves it, prints the next steps on out,
// and returns when ctx is done and everything it started has stopped.
func Run(ctx context.Context, o Options, out io.Writer) error {
	dir, cleanup, err := caDir(o.Dir)
	if err != nil {
		return err
	}
	defer cleanup()
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	if o.Command == "" {
		o.Command = "mutual"
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	pass, err := ensureCA(dir)
	if err != nil {
		return err
	}
	svc, err := caservice.Open(ctx, caservice.Options{Dir: dir, Passphrase: pass, Listen: o.Listen, Log: o.Log, MetricsListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0"})
	if err != nil {
		return err
	}
	defer svc.Close()
	admin, tok, err := adminAndToken(ctx, svc, dir)
	if err != nil {
		return err
	}
	// The token goes to a file, not into a printed command line: argv is
	// visible to every user in the process list (and stays in history).
	tokFile := filepath.Join(dir, TokenFile)
	if err := atomicfile.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
		return fmt.Errorf("write the demo join token: %w", err)
	}
	printIntro(out, o, dir, svc, tokFile)
	err = serve(ctx, o, svc, admin, dir, out)
	fmt.Fprintln(out, "mutual dev: stopped")
	return err
}

// caDir is the dev CA's directory: dir, or a temporary one that cleanup
// removes.
func caDir(dir string) (_ string, cleanup func(), _ error) {
	if dir != "" {
		return dir, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", "mutual-dev-*")
	if err != nil {
		return "", nil, err
	}
	return tmp, func() { os.RemoveAll(tmp) }, nil
}

// ensureCA returns the passphrase of the dev CA in dir, creating the CA
// (and a random passphrase beside it) on first use.
func ensureCA(dir string) ([]byte, error) {
	passPath := filepath.Join(dir, PassphraseFile)
	pass, err := os.ReadFile(passPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		return []byte(strings.TrimSpace(string(pass))), nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	b := make([]byte, 24)
	rand.Read(b)
	pass = []byte(base64.RawURLEncoding.EncodeToString(b))
	if err := os.WriteFile(passPath, append(pass, '\n'), 0o600); err != nil {
		return nil, err
	}
	td, _ := spiffeid.TrustDomainFromString(TrustDomain)
	if _, err := pki.Init(pki.InitOptions{Dir: dir, TrustDomain: td, Passphrase: pass, AdminName: "dev"}); err != nil {
		return nil, fmt.Errorf("create the dev CA: %w", err)
	}
	return pass, nil
}

// demoID is the identity of the token printed for the user.
const demoID = "spiffe://" + TrustDomain + "/ns/dev/hello"

// adminAndToken points the admin identity at the service and makes the
// join token printed for the user.
func adminAndToken(ctx context.Context, svc *caservice.Service, dir string) (spiffeid.ID, string, error) {
	if err := client.SaveCAURLs(filepath.Join(dir, pki.AdminDir), []string{svc.URL}); err != nil {
		return spiffeid.ID{}, "", err
	}
	admin, _ := spiffeid.FromSegments(svc.Authority.Policy.TrustDomain, "admin", "dev")
	tok, _, err := svc.Authority.CreateToken(ctx, admin, ca.TokenRequest{ID: demoID, DNSNames: []string{"localhost"}, IPAddresses: []string{"127.0.0.1"}})
	return admin, tok, err
}

// printIntro says what runs and what to try next; tokFile holds the demo
// join token.
func printIntro(out io.Writer, o Options, dir string, svc *caservice.Service, tokFile string) {
	adminDir, workDir, m := filepath.Join(dir, pki.AdminDir), filepath.Join(dir, "hello"), o.Command
	fmt.Fprintf(out, `mutual dev: the whole system on loopback (Ctrl-C stops it)

  trust domain   %s
  CA directory   %s%s
  CA service     %s   (embedded SQLite store: %s)
  metrics        http://%s/metrics
  admin identity %s

Next: enroll a workload as %s with the single-use join token (valid 15
minutes) in %s (or in $MUTUAL_TOKEN; never in argv, where ps shows it):

  %s cert request --token-file %s --out %s

then renew it over mTLS, list what was issued, make more tokens:

  %s cert renew --dir %s
  %s cert list --identity-dir %s
  %s token create --identity-dir %s --identity spiffe://%s/ns/prod/api
  %s inspect %s
  openssl verify -CAfile %s -untrusted %s %s

`, TrustDomain, dir, tempNote(o.Dir), svc.URL, filepath.Join(dir, pki.DatabaseFile), svc.MetricsAddr(), adminDir,
		demoID, tokFile, m, tokFile, workDir,
		m, workDir, m, adminDir, m, adminDir, TrustDomain, m, workDir,
		filepath.Join(dir, pki.BundleFile), filepath.Join(dir, pki.IntermediateCertFile), filepath.Join(workDir, "cert.pem"))
}

// serve runs the service and, unless o.NoDemo, the demo beside it, until
// ctx is done or the service fails; it returns once all of it has stopped.
// A demo that cannot start is reported on out and the service runs on.
func serve(ctx context.Context, o Options, svc *caservice.Service, admin spiffeid.ID, dir string, out io.Writer) error {
	g, ctx := errgroup.WithContext(ctx)
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	g.Go(func() error {
		defer stop() // the service's end is the demo's end
		return svc.Run(ctx)
	})
	var demo *Demo
	if !o.NoDemo {
		var err error
		demo, err = startDemo(&parts{ctx: ctx, g: g, log: o.Log}, svc, admin, filepath.Join(dir, "demo"), out)
		if err != nil {
			fmt.Fprintf(out, "Demo failed: %v\n\n", err)
		} else {
			fmt.Fprintf(out, `Try it yourself:
  curl http://%s/                      # as demo/web, through its outbound proxy
  curl --cacert %s --cert %s --key %s https://%s/   # as demo/intruder: 403

`, demo.WebOutbound, filepath.Join(dir, pki.BundleFile), filepath.Join(demo.Dir, "intruder", "cert.pem"), filepath.Join(demo.Dir, "intruder", "key.pem"), demo.APIProxy)
		}
	}
	if o.Ready != nil {
		o.Ready(svc, demo)
	}
	return g.Wait()
}

func tempNote(dir string) string {
	if dir == "" {
		return "   (temporary: removed on exit; keep it with --dir)"
	}
	return ""
}
