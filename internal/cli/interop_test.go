package cli_test

import (
	"bytes"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testport"
)

// needTool skips without tool outside CI and fails on CI.
func needTool(t *testing.T, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing on CI", tool)
		}
		t.Skipf("%s is not installed", tool)
	}
}

// TestCAInterop: with stock clients, the CA sends leaf and intermediate
// (no self-signed root) and the chain verifies against the bundle
// (openssl s_client); it accepts an admin client that sends only its leaf
// (curl); and it logs a refused client certificate at its default level.
func TestCAInterop(t *testing.T) {
	needTool(t, "openssl")
	needTool(t, "curl")
	c := testca.New(t)
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	if err := os.WriteFile(pass, []byte(testca.Passphrase+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := testport.Addr(t)
	p := startProcess(t, "server", "--dir", c.Dir, "--passphrase-file", pass, "--listen", addr)
	p.waitLog(t, "CA service listening")
	bundle := filepath.Join(c.AdminDir, "bundle.pem")

	out, err := exec.Command("openssl", "s_client", "-connect", addr, "-showcerts", "-CAfile", bundle, "-verify_return_error").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl s_client: %v\n%s", err, out)
	}
	if n := strings.Count(string(out), "-----BEGIN CERTIFICATE-----"); n != 2 {
		t.Errorf("the CA sent %d certificates, want 2 (leaf, intermediate; no root):\n%s", n, out)
	}
	if !strings.Contains(string(out), "Verify return code: 0 (ok)") {
		t.Errorf("openssl does not verify the CA's chain against the bundle:\n%s", out)
	}

	// The admin's leaf alone, as many TLS clients send it.
	chain, err := os.ReadFile(filepath.Join(c.AdminDir, "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(chain)
	leaf := filepath.Join(dir, "leaf.pem")
	if err := os.WriteFile(leaf, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	curl := func(cert, key string) (string, error) {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command("curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", bundle,
			"--cert", cert, "--key", key, "https://"+addr+"/v1/tokens")
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String() + stderr.String(), err
	}
	if got, err := curl(leaf, filepath.Join(c.AdminDir, "key.pem")); err != nil || got != "200" {
		t.Errorf("curl with the admin's leaf alone: %v %s\n%s", err, got, p.stderr)
	}

	// A client certificate from another CA is refused, and the CA says so
	// without --debug.
	other := testca.New(t)
	stranger := filepath.Join(dir, "stranger")
	if err := other.Leaf(t, "spiffe://example.org/admin/mallory").Save(stranger); err != nil {
		t.Fatal(err)
	}
	if got, err := curl(filepath.Join(stranger, "cert.pem"), filepath.Join(stranger, "key.pem")); err == nil && got == "200" {
		t.Fatal("BUG: the CA accepted a client certificate from another CA")
	}
	p.waitLog(t, `"msg":"TLS handshake refused"`)
	p.terminate(t)
}
