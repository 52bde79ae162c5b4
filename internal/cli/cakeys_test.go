package cli_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/keyref/softhsmtest"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/translog/logkey"
)

// TestCAKeysInTokenCommands: ca init --intermediate-key makes the key in a
// SoftHSM2 token and writes no file for it; rotate-intermediate --new-key
// moves it to a new object; bad key flags stop with the flag's name.
func TestCAKeysInTokenCommands(t *testing.T) {
	tok := softhsmtest.New(t)
	tmp := t.TempDir()
	pass := filepath.Join(tmp, "pass")
	if err := os.WriteFile(pass, []byte("a passphrase for the test CA\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "ca")
	for _, c := range []struct{ flag, value, want string }{
		{"--root-key", "/etc/root.pem", "--root-key"},
		{"--intermediate-key", "pkcs11:token=x;object=y?module-path=/m.so&pin-value=1234", "pin-value"},
		{"--log-key", "log.pem", "--log-key"},
		{"--ocsp-key", tok.URI("intermediate") + "\x00--intermediate-key", "its own object="},
	} {
		args := []string{"ca", "init", "--dir", dir, "--trust-domain", "example.org", "--passphrase-file", pass, c.flag}
		value, also, _ := strings.Cut(c.value, "\x00")
		args = append(args, value)
		if also != "" {
			args = append(args, also, value)
		}
		out, err := run(args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ca init %s %s: %v, want an error naming %s\n%s", c.flag, c.value, err, c.want, out)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a refused ca init left %s: %v", dir, err)
	}
	if out, err := run("ca", "init", "--dir", dir, "--trust-domain", "example.org", "--passphrase-file", pass,
		"--intermediate-key", tok.URI("intermediate"), "--ocsp-key", tok.URI("ocsp"), "--log-key", tok.URI("log")); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	for _, f := range []string{pki.IntermediateKeyFile, logkey.KeyFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("ca init wrote %s for a token key: %v", f, err)
		}
	}
	if cfg, _, err := pki.ReadConfig(dir); err != nil || !strings.Contains(cfg.Keys.OCSP, "object=ocsp") || !strings.Contains(cfg.Keys.Log, "object=log") {
		t.Fatalf("ca.json keys after ca init --ocsp-key --log-key: %+v (%v)", cfg.Keys, err)
	}
	out, err := run("ca", "rotate-intermediate", "--dir", dir, "--passphrase-file", pass, "--new-key", tok.URI("intermediate-2"), "--json")
	if err != nil {
		t.Fatalf("ca rotate-intermediate: %v\n%s", err, out)
	}
	var res struct {
		NewKey string `json:"new_key"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || !strings.Contains(res.NewKey, "object=intermediate-2") {
		t.Fatalf("rotate-intermediate --json: %v, new_key %q\n%s", err, res.NewKey, out)
	}
	cfg, _, err := pki.ReadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Keys.Intermediate != res.NewKey || len(cfg.Keys.Retired) != 1 {
		t.Fatalf("ca.json keys after the rotation: %+v", cfg.Keys)
	}
	if out, err := run("ca", "rotate-intermediate", "--dir", dir, "--passphrase-file", pass, "--new-key", tok.URI("intermediate-2")); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("a rotation into a taken object: %v\n%s", err, out)
	}
}

// TestCAKeyInTokenBadInput: a root key in a token that cannot be used (a
// wrong PIN, an object that does not exist, a module path with no library,
// a key of a type mutual cannot sign with) stops ca rotate-intermediate
// with one line that names what to fix, and changes nothing.
func TestCAKeyInTokenBadInput(t *testing.T) {
	tok := softhsmtest.New(t)
	tmp := t.TempDir()
	pass := filepath.Join(tmp, "pass")
	wrongPIN := filepath.Join(tmp, "wrong-pin")
	if err := os.WriteFile(pass, []byte("a passphrase for the test CA\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wrongPIN, []byte("9999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A DSA key pair in the token, imported as SoftHSM2 allows.
	dsaParams, dsaKey := filepath.Join(tmp, "dsa-params.pem"), filepath.Join(tmp, "dsa.pem")
	for _, args := range [][]string{
		{"genpkey", "-genparam", "-algorithm", "DSA", "-pkeyopt", "pbits:1024", "-out", dsaParams},
		{"genpkey", "-paramfile", dsaParams, "-out", dsaKey},
	} {
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", args[0], err, out)
		}
	}
	if out, err := exec.Command("softhsm2-util", "--import", dsaKey, "--token", tok.Label, "--label", "dsa", "--id", "d5", "--pin", softhsmtest.PIN).CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util --import: %v\n%s", err, out)
	}
	dir := filepath.Join(tmp, "ca")
	if out, err := run("ca", "init", "--dir", dir, "--trust-domain", "example.org", "--passphrase-file", pass, "--root-key", tok.URI("root")); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	cfg, _, err := pki.ReadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	good := cfg.Keys.Root
	missingModule := softhsmtest.Token{Module: "/nonexistent/libsofthsm2.so", Label: tok.Label, PINFile: tok.PINFile}
	wrongPINTok := softhsmtest.Token{Module: tok.Module, Label: tok.Label, PINFile: wrongPIN}
	for _, c := range []struct {
		name, ref string
		want      []string
	}{
		{"wrong PIN", wrongPINTok.URI("root"), []string{"PIN", wrongPIN}},
		{"unknown object", tok.URI("nope"), []string{`object "nope"`, "object="}},
		{"module path with no library", missingModule.URI("root"), []string{"module-path", "/nonexistent/libsofthsm2.so"}},
		{"key of the wrong type", tok.URI("dsa"), []string{`object "dsa"`, "DSA", "generate an ECDSA P-256 key pair"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg.Keys.Root = c.ref
			if err := os.WriteFile(filepath.Join(dir, pki.ConfigFile), pki.MarshalConfig(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(filepath.Join(dir, pki.IntermediateCertFile))
			out, err := run("ca", "rotate-intermediate", "--dir", dir, "--passphrase-file", pass)
			if err == nil {
				t.Fatalf("rotate-intermediate with %s succeeded:\n%s", c.name, out)
			}
			t.Log(err)
			if msg := err.Error(); strings.Contains(msg, "\n") {
				t.Errorf("error on several lines: %q", msg)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if after, _ := os.ReadFile(filepath.Join(dir, pki.IntermediateCertFile)); string(after) != string(before) {
				t.Error("a refused rotation replaced the intermediate")
			}
		})
	}
	cfg.Keys.Root = good
	if err := os.WriteFile(filepath.Join(dir, pki.ConfigFile), pki.MarshalConfig(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := run("ca", "rotate-intermediate", "--dir", dir, "--passphrase-file", pass); err != nil {
		t.Fatalf("rotate-intermediate with the right key: %v\n%s", err, out)
	}
}
