package cli

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// daemonCommand finds a daemon command in a fresh command tree.
func daemonCommand(t *testing.T, path []string) *cobra.Command {
	t.Helper()
	root := newRoot(&env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard})
	c, _, err := root.Find(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sample is a YAML value for a flag of type typ and the flag's String()
// once set from it.
func sample(typ string) (yamlValue, want string) {
	switch typ {
	case "bool":
		return "true", "true"
	case "int":
		return "7", "7"
	case "duration":
		return "42s", "42s"
	case "level":
		return "warn", "warn"
	case "stringSlice", "stringArray":
		return "[a, \"b,c\"]", "a|b,c" // one element holds a comma
	}
	return "from-file", "from-file"
}

// TestEveryDaemonFlagHasAConfigKey walks every daemon command's flags and
// sets each from a --config file: no flag can lack a key.
func TestEveryDaemonFlagHasAConfigKey(t *testing.T) {
	for _, path := range daemons {
		c := daemonCommand(t, path)
		if c.Flags().Lookup(configFlag) == nil {
			t.Errorf("%q has no --config", path)
			continue
		}
		n := 0
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if f.Name == configFlag || f.Name == "help" {
				return
			}
			n++
			c := daemonCommand(t, path)
			f = c.Flags().Lookup(f.Name)
			v, want := sample(f.Value.Type())
			if err := applyConfig(c, "test.yaml", []byte(f.Name+": "+v+"\n")); err != nil {
				t.Errorf("%q: key %s: %v", path, f.Name, err)
				return
			}
			got := f.Value.String()
			if sv, ok := f.Value.(pflag.SliceValue); ok {
				got = strings.Join(sv.GetSlice(), "|")
			}
			if got != want || !f.Changed {
				t.Errorf("%q: key %s: flag is %q (changed %v), want %q", path, f.Name, got, f.Changed, want)
			}
		})
		if n < 2 {
			t.Errorf("%q: only %d flags seen", path, n)
		}
		if keys := configKeys(c); len(keys) != n {
			t.Errorf("%q: %d keys for %d flags", path, len(keys), n)
		}
	}
}

// TestSliceKeyKeepsCommas: a list element with a comma is one element
// (a --write reload command may hold one).
func TestSliceKeyKeepsCommas(t *testing.T) {
	c := daemonCommand(t, []string{"agent"})
	if err := applyConfig(c, "a.yaml", []byte("write:\n  - spiffe://td/x=/d,reload='a, b'\n")); err != nil {
		t.Fatal(err)
	}
	got, _ := c.Flags().GetStringArray("write")
	if len(got) != 1 || got[0] != "spiffe://td/x=/d,reload='a, b'" {
		t.Errorf("write = %q", got)
	}
}

// TestCommandLineOverridesConfig: a flag given on the command line keeps
// its value; the file sets the others.
func TestCommandLineOverridesConfig(t *testing.T) {
	c := daemonCommand(t, []string{"proxy", "inbound"})
	if err := c.Flags().Parse([]string{"--listen", "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if err := applyConfig(c, "p.yaml", []byte("listen: 127.0.0.1:2\ntarget: 127.0.0.1:3\n")); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"listen": "127.0.0.1:1", "target": "127.0.0.1:3"} {
		if got := c.Flags().Lookup(name).Value.String(); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

// TestConfigErrors: an unknown key names itself, the file and the line; a
// value of the wrong type names the key.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		path []string
		yaml string
		want []string
	}{
		{[]string{"server"}, "listen: :8443\nlisten-adress: :9\n", []string{"s.yaml:2", `unknown key "listen-adress"`, "mutual server", "listen,"}},
		{[]string{"agent"}, "config: other.yaml\n", []string{"s.yaml:1", `unknown key "config"`}},
		{[]string{"proxy", "inbound"}, "\nidle-timeout: 5\n", []string{"s.yaml:2", `key "idle-timeout"`, "duration"}},
		{[]string{"proxy", "outbound"}, "tls12: yes please\n", []string{`key "tls12"`, "true or false"}},
		{[]string{"server"}, "feed-max-streams: many\n", []string{`key "feed-max-streams"`, "integer"}},
		{[]string{"server"}, "dir: [a, b]\n", []string{`key "dir"`, "single"}},
		{[]string{"log", "monitor"}, "- server\n", []string{"s.yaml:1", "mapping"}},
		{[]string{"log", "monitor"}, "once: true\nonce: false\n", []string{"s.yaml:2", "twice"}},
	} {
		err := applyConfig(daemonCommand(t, tc.path), "s.yaml", []byte(tc.yaml))
		if err == nil {
			t.Errorf("%q %q: accepted", tc.path, tc.yaml)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q %q: error %q does not say %q", tc.path, tc.yaml, err, w)
			}
		}
	}
	if err := applyConfig(daemonCommand(t, []string{"server"}), "e.yaml", []byte("# nothing yet\n")); err != nil {
		t.Errorf("an empty file: %v", err)
	}
}

// TestConfigFileThroughRun: `mutual proxy outbound --config FILE` reads the
// file before checking its flags, and a missing file is named.
func TestConfigFileThroughRun(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "out.yaml")
	if err := os.WriteFile(file, []byte("listen: 127.0.0.1:15001\ntarget: 127.0.0.1:8443\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) error {
		return newRootRun(t, args)
	}
	err := run("proxy", "outbound", "--config", file)
	if err == nil || !strings.Contains(err.Error(), "--expect") {
		t.Errorf("with listen and target from the file, want the missing --expect named, got %v", err)
	}
	err = run("proxy", "outbound", "--config", file, "--listen", "10.1.1.1:1")
	if err == nil || !strings.Contains(err.Error(), "10.1.1.1:1 is not a loopback") {
		t.Errorf("the command line's --listen should win over the file's: %v", err)
	}
	missing := filepath.Join(dir, "missing.yaml")
	if err := run("proxy", "outbound", "--config", missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("a missing config file: %v", err)
	}
}

func newRootRun(t *testing.T, args []string) error {
	t.Helper()
	root := newRoot(&env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard})
	root.SetArgs(args)
	root.SetOut(io.Discard)
	root.SetErr(io.Discard)
	err := root.Execute()
	t.Logf("%q: %v", args, err)
	return err
}

// TestPackagedConfigFiles: the config files the Debian package installs
// are accepted by the commands their units run.
func TestPackagedConfigFiles(t *testing.T) {
	for file, path := range map[string][]string{
		"server.yaml":                 {"server"},
		"agent.yaml":                  {"agent"},
		"proxy-inbound-example.yaml":  {"proxy", "inbound"},
		"proxy-outbound-example.yaml": {"proxy", "outbound"},
	} {
		name := filepath.Join("..", "..", "packaging", "etc", file)
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := applyConfig(daemonCommand(t, path), name, data); err != nil {
			t.Errorf("%s: %v", file, err)
		}
	}
	c := daemonCommand(t, []string{"proxy", "inbound"})
	if err := applyConfigFile(c, filepath.Join("..", "..", "packaging", "etc", "proxy-inbound-example.yaml")); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Flags().GetStringSlice("allow"); len(got) != 1 || got[0] != "spiffe://example.org/ns/prod/*" {
		t.Errorf("allow from the example: %q", got)
	}
}

// TestLogLevel: every daemon takes --log-level (and log-level: in its
// config file), which sets the level of its loggers; a bad one is refused.
func TestLogLevel(t *testing.T) {
	for _, path := range daemons {
		e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
		root := newRoot(e)
		c, _, err := root.Find(path)
		if err != nil {
			t.Fatal(err)
		}
		if e.logger(slog.LevelInfo).Enabled(context.Background(), slog.LevelDebug) {
			t.Fatalf("%q: debug enabled by default", path)
		}
		if err := c.Flags().Parse([]string{"--log-level", "debug"}); err != nil {
			t.Fatalf("%q: %v", path, err)
		}
		if !e.logger(slog.LevelInfo).Enabled(context.Background(), slog.LevelDebug) {
			t.Errorf("%q: --log-level debug did not enable debug", path)
		}
		if err := applyConfig(c, "l.yaml", []byte("log-level: error\n")); err != nil {
			t.Fatal(err)
		}
		if !e.logger(slog.LevelInfo).Enabled(context.Background(), slog.LevelDebug) {
			t.Errorf("%q: the config file overrode --log-level", path)
		}
		err = c.Flags().Parse([]string{"--log-level", "loud"})
		if err == nil || !strings.Contains(err.Error(), "debug, info, warn or error") {
			t.Errorf("%q: --log-level loud: %v", path, err)
		}
	}
	e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	c, _, _ := newRoot(e).Find([]string{"agent"})
	if err := applyConfig(c, "l.yaml", []byte("log-level: warn\n")); err != nil {
		t.Fatal(err)
	}
	if e.logger(slog.LevelInfo).Enabled(context.Background(), slog.LevelInfo) {
		t.Error("log-level: warn in the config file left info enabled")
	}
}
