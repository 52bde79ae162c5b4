package cli_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/cli"
	"github.com/mutual-tls/mutual/internal/testenv"
)

// secretOnArgv matches an example that hands a secret to mutual as an
// argument value, where every user of the machine reads it in
// /proc/PID/cmdline.
var secretOnArgv = regexp.MustCompile(`mutual .*--(token|passphrase|password|pin)[ =]`)

// TestHelpKeepsSecretsOffTheCommandLine: no help text shows a secret given
// as an argument; the flags that still take one say so and name the safer
// form.
func TestHelpKeepsSecretsOffTheCommandLine(t *testing.T) {
	for _, cmd := range [][]string{{"cert", "request"}, {"agent"}, {"token", "create"}, {"partner", "token"}, {"dev"}, {"server"},
		{"ca", "init"}, {"keys", "serve"}, {"proxy", "inbound"}, {"proxy", "outbound"}, {"seal"}, {"unseal"}} {
		out, err := run(append(cmd, "--help")...)
		if err != nil {
			t.Fatalf("mutual %s --help: %v", strings.Join(cmd, " "), err)
		}
		for _, line := range strings.Split(out, "\n") {
			if secretOnArgv.MatchString(line) {
				t.Errorf("mutual %s --help shows a secret on the command line: %q", strings.Join(cmd, " "), strings.TrimSpace(line))
			}
		}
	}
	for _, cmd := range [][]string{{"cert", "request"}, {"agent"}} {
		out, _ := run(append(cmd, "--help")...)
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == "--token" && (!strings.Contains(line, "process list") || !strings.Contains(line, "--token-file")) {
				t.Errorf("mutual %s --help: %q does not say the token shows in the process list and name --token-file", strings.Join(cmd, " "), strings.TrimSpace(line))
			}
		}
	}
	if out, _ := run("cert", "request", "--help"); !strings.Contains(out, "--token-file -") {
		t.Error("mutual cert request --help does not show --token-file - (the token on standard input)")
	}
}

// TestTokenOnTheCommandLineWarns: a join token given as --token still
// works but warns, naming --token-file; one from --token-file (a file or
// standard input) or from a daemon's --config file does not.
func TestTokenOnTheCommandLineWarns(t *testing.T) {
	const warning = "--token puts the join token in the process list"
	dir := t.TempDir()
	out, _ := run("cert", "request", "--token", "bogus", "--out", filepath.Join(dir, "a"))
	if !strings.Contains(out, warning) || !strings.Contains(out, "--token-file") {
		t.Errorf("cert request --token: %q; want a warning naming --token-file", out)
	}
	out, _ = run("agent", "--dir", filepath.Join(dir, "agent"), "--socket", "unix://"+filepath.Join(dir, "agent.sock"), "--token", "bogus")
	if !strings.Contains(out, warning) || !strings.Contains(out, "--token-file") {
		t.Errorf("agent --token: %q; want a warning naming --token-file", out)
	}
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte("token: bogus\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ = run("agent", "--dir", filepath.Join(dir, "agent2"), "--socket", "unix://"+filepath.Join(dir, "agent2.sock"), "--config", cfg)
	if strings.Contains(out, warning) {
		t.Errorf("agent with the token in its --config file warned: %q", out)
	}

	c := testenv.StartCA(t, testenv.Options{})
	tok := c.Token(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{})
	var stdout, stderr bytes.Buffer
	err := cli.Run(context.Background(), []string{"cert", "request", "--token-file", "-", "--out", filepath.Join(dir, "web")}, strings.NewReader(tok+"\n"), &stdout, &stderr)
	if err != nil {
		t.Fatalf("cert request --token-file -: %v\n%s", err, stderr.String())
	}
	if strings.Contains(stderr.String(), warning) {
		t.Errorf("cert request --token-file - warned: %q", stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "web", "cert.pem")); err != nil {
		t.Errorf("cert request --token-file - wrote no certificate: %v", err)
	}
}
