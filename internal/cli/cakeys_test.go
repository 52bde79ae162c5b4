package cli_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/keyref/softhsmtest"
	"github.com/mutual-tls/mutual/internal/pki"
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
	} {
		out, err := run("ca", "init", "--dir", dir, "--trust-domain", "example.org", "--passphrase-file", pass, c.flag, c.value)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ca init %s %s: %v, want an error naming %s\n%s", c.flag, c.value, err, c.want, out)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a refused ca init left %s: %v", dir, err)
	}
	if out, err := run("ca", "init", "--dir", dir, "--trust-domain", "example.org", "--passphrase-file", pass,
		"--intermediate-key", tok.URI("intermediate")); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, pki.IntermediateKeyFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ca init wrote %s for a token key: %v", pki.IntermediateKeyFile, err)
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
