// Package cli is mutual's command line: each subcommand parses its flags into
// an options struct, checks it, and calls the package that does the work.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/mutual-tls/mutual/internal/buildinfo"
	"github.com/mutual-tls/mutual/internal/watch"
)

// Run executes the mutual command line with args (without the program name).
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return run(ctx, &env{stdin: stdin, stdout: stdout, stderr: stderr}, args)
}

// run executes the command line with the streams (and reload trigger) of e.
func run(ctx context.Context, e *env, args []string) error {
	root := newRoot(e)
	stdin, stdout, stderr := e.stdin, e.stdout, e.stderr
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return root.ExecuteContext(ctx)
}

// Command returns mutual's command tree, for generating man pages and
// completions at package build time.
func Command() *cobra.Command {
	return newRoot(&env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr})
}

// daemonAnnotation marks the commands that run as services: they ignore
// SIGHUP (see Main).
const daemonAnnotation = "mutual.daemon"

// daemons are the service commands, by path under the root.
var daemons = [][]string{{"server"}, {"agent"}, {"proxy", "inbound"}, {"proxy", "outbound"}, {"log", "monitor"}}

func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "mutual",
		Short: "mutual: your own CA and mutual TLS for every service, node and partner",
		Long: `mutual makes an organisation its own certificate authority for SPIFFE identities:
short-lived certificates for every service, enrolled with single-use join tokens,
renewed over mTLS, revocable at once.

Start with "mutual dev" to see the whole system on loopback.`,
		Version:       buildinfo.Read().String(),
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(
		caCmd(e),
		serverCmd(e),
		tokenCmd(e),
		certCmd(e),
		inspectCmd(e),
		devCmd(e),
		proxyCmd(e),
		entryCmd(e),
		agentCmd(e),
		logCmd(e),
		diagnoseCmd(e),
		auditCmd(e),
		dashboardCmd(e),
		versionCmd(e),
		completionCmd(e),
		federationCmd(e),
		partnerCmd(e),
	)
	root.AddCommand(sealCmds(e)...)
	for _, path := range daemons {
		c, rest, err := root.Find(path)
		if err != nil || len(rest) != 0 || c == root {
			panic(fmt.Sprintf("daemon command %q is not in the command tree", strings.Join(path, " ")))
		}
		if c.Annotations == nil {
			c.Annotations = map[string]string{}
		}
		c.Annotations[daemonAnnotation] = "true"
		c.Flags().Var(levelFlag{e}, "log-level", "least severe log events written: debug, info, warn or error")
		addConfigFlag(c)
	}
	return root
}

// Main runs mutual as a process and returns its exit code. SIGINT and
// SIGTERM cancel the command's context: daemons drain and stop, as before.
// SIGHUP never kills a daemon (server, agent, proxy, log monitor): it
// re-reads at once what can be reloaded safely, the proxies' identity
// directories and policy files and the server's CA directory after a key
// rotation (otherwise re-read within a poll interval of a change); the agent reads its token file when it needs one. Other
// commands keep the default, so closing a terminal still ends them.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, reload: &watch.Trigger{}}
	if isDaemon(args) {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		log := slog.New(slog.NewJSONHandler(stderr, nil))
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					log.Info("SIGHUP received: still running; re-reading identity directories, policy files and the CA directory now (SIGTERM stops)")
					e.reload.Fire()
				}
			}
		}()
	}
	if err := run(ctx, e, args); err != nil {
		fmt.Fprintln(stderr, "mutual: "+OneLine(err))
		return 1
	}
	return 0
}

// isDaemon reports whether args name a service command.
func isDaemon(args []string) bool {
	root := newRoot(&env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard})
	c, _, err := root.Find(args)
	return err == nil && c.Annotations[daemonAnnotation] == "true"
}

// env carries the process's streams to the subcommands.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// reload fires on SIGHUP (Main); nil outside Main.
	reload *watch.Trigger
	// level is --log-level, when given.
	level *slog.Level
}

// logger logs JSON lines on stderr from level up, or from --log-level when
// it was given.
func (e *env) logger(level slog.Level) *slog.Logger {
	if e.level != nil {
		level = *e.level
	}
	return slog.New(slog.NewJSONHandler(e.stderr, &slog.HandlerOptions{Level: level}))
}

// levelFlag is --log-level: it sets the level of e's loggers.
type levelFlag struct{ e *env }

func (f levelFlag) String() string {
	if f.e == nil || f.e.level == nil {
		return "info"
	}
	return strings.ToLower(f.e.level.String())
}

func (f levelFlag) Set(s string) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return fmt.Errorf("%q: use debug, info, warn or error", s)
	}
	f.e.level = &l
	return nil
}

func (levelFlag) Type() string { return "level" }

func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// OneLine flattens an error (joined errors included) onto one line.
func OneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}

// flagError names the flag at fault.
func flagError(flag, format string, a ...any) error {
	return fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, a...))
}

// readPassphrase reads a passphrase file: one line, trailing newline dropped.
func readPassphrase(path string) ([]byte, error) {
	if path == "" {
		return nil, flagError("passphrase-file", "required: a file holding the passphrase that encrypts the CA keys")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, flagError("passphrase-file", "%s does not exist; create it with a long random passphrase (e.g. `openssl rand -base64 32 > %s && chmod 600 %s`)", path, path, path)
		}
		return nil, flagError("passphrase-file", "%v", err)
	}
	p := strings.TrimRight(string(b), "\r\n")
	if p == "" {
		return nil, flagError("passphrase-file", "%s is empty; an empty passphrase would leave the CA keys unencrypted", path)
	}
	return []byte(p), nil
}

// humanDuration renders d as "3h", "2 days" for people.
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		h := int(d.Hours())
		if m := int(d.Minutes()) % 60; m != 0 && h < 10 {
			return fmt.Sprintf("%dh%dm", h, m)
		}
		return fmt.Sprintf("%dh", h)
	}
	return fmt.Sprintf("%d days", int(d.Hours()/24))
}

// relative says "in 3h" or "2 days ago".
func relative(t, now time.Time) string {
	if t.After(now) {
		return "in " + humanDuration(t.Sub(now))
	}
	return humanDuration(now.Sub(t)) + " ago"
}

// readToken takes a join token from --token-file (a path, or "-" for
// standard input), else --token, else $MUTUAL_TOKEN.
func readToken(e *env, token, tokenFile string) (string, error) {
	if tokenFile == "-" {
		b, err := io.ReadAll(io.LimitReader(e.stdin, 64<<10))
		if err != nil {
			return "", flagError("token-file", "read the token from standard input: %v", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return "", flagError("token-file", "%v", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if token != "" {
		return token, nil
	}
	return os.Getenv("MUTUAL_TOKEN"), nil
}

// tokenOnArgvWarning is what a command says when --token was given on its
// command line.
const tokenOnArgvWarning = "--token puts the join token in the process list (/proc/PID/cmdline), where every user of this machine can read it; give it with --token-file FILE (or - for standard input) or $MUTUAL_TOKEN"

// onCommandLine reports whether the flag name of c was given on the
// command line (not by a --config file, which keeps a secret out of argv).
func onCommandLine(c *cobra.Command, name string) bool {
	f := c.Flags().Lookup(name)
	return f != nil && f.Changed && f.Annotations[fromConfigAnnotation] == nil
}

// storeFlags are the flags that name the CA's store. A PostgreSQL password
// does not belong in argv, which every local user can read: --store-file
// and $MUTUAL_STORE keep it out, and so do PGPASSWORD and PGPASSFILE, which
// the PostgreSQL driver reads.
type storeFlags struct {
	store     string
	storeFile string
}

func (s *storeFlags) register(c *cobra.Command, what string) {
	c.Flags().StringVar(&s.store, "store", "", what+" (or --store-file, or $MUTUAL_STORE; keep passwords out of it: use PGPASSWORD or PGPASSFILE)")
	c.Flags().StringVar(&s.storeFile, "store-file", "", "file holding the --store URL, for one that carries a password")
}

// url returns the store URL from --store-file, else --store, else
// $MUTUAL_STORE ("" for the default), warning on log when a password was
// given on the command line.
func (s *storeFlags) url(log *slog.Logger) (string, error) {
	if s.storeFile != "" {
		if s.store != "" {
			return "", flagError("store-file", "give --store or --store-file, not both")
		}
		b, err := os.ReadFile(s.storeFile)
		if err != nil {
			return "", flagError("store-file", "%v", err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", flagError("store-file", "%s is empty: write the store URL in it", s.storeFile)
		}
		return v, nil
	}
	if s.store != "" {
		if storeHasPassword(s.store) {
			log.Warn("--store carries a database password, which every user of this machine can read in the process list; move it to --store-file, $MUTUAL_STORE, PGPASSWORD or PGPASSFILE",
				"flag", "store")
		}
		return s.store, nil
	}
	return os.Getenv("MUTUAL_STORE"), nil
}

// storeHasPassword reports whether a store URL or PostgreSQL keyword/value
// DSN carries a password.
func storeHasPassword(s string) bool {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			return true
		}
	}
	if u, err := url.Parse(s); err == nil && u.Query().Has("password") {
		return true
	}
	for _, f := range strings.Fields(s) {
		if strings.HasPrefix(strings.ToLower(f), "password=") {
			return true
		}
	}
	return false
}
