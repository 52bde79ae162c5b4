package cli_test

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
)

// oneWayServer is a TLS server on 127.0.0.1 that never asks for a client
// certificate: one-way TLS where mutual TLS was meant.
func oneWayServer(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// TestDiagnoseCLI: `mutual diagnose` prints the report, exits with the
// verdict as its error, speaks JSON with --json, and diagnoses damaged
// identity files instead of stopping at them.
func TestDiagnoseCLI(t *testing.T) {
	ca := testca.New(t)
	server := ca.Leaf(t, "spiffe://example.org/api", testca.IP("127.0.0.1"))
	addr := oneWayServer(t, server.TLSCertificate())
	client := ca.Leaf(t, "spiffe://example.org/web")
	dir := filepath.Join(t.TempDir(), "web")
	if err := client.Save(dir); err != nil {
		t.Fatal(err)
	}

	out, err := run("diagnose", addr, "--identity-dir", dir, "--no-revocation")
	if err == nil || !strings.Contains(err.Error(), "client_cert_not_requested") {
		t.Fatalf("error %v, want the verdict client_cert_not_requested\n%s", err, out)
	}
	for _, w := range []string{"verdict: client_cert_not_requested", "never asks for a client certificate", "fix:"} {
		if !strings.Contains(out, w) {
			t.Errorf("the output does not say %q:\n%s", w, out)
		}
	}

	out, _ = run("diagnose", addr, "--identity-dir", dir, "--json")
	var r struct{ Verdict, Fix string }
	if err := json.Unmarshal([]byte(out[:strings.LastIndex(out, "}")+1]), &r); err != nil || r.Verdict != "client_cert_not_requested" || r.Fix == "" {
		t.Errorf("--json: %v, verdict %q\n%s", err, r.Verdict, out)
	}

	enc, err := pki.MarshalPrivateKey(client.Key, []byte("secret"), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, identity.KeyFile), enc, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = run("diagnose", addr, "--identity-dir", dir)
	if err == nil || !strings.Contains(out, "verdict: key_encrypted") || !strings.Contains(out, "openssl pkey") {
		t.Errorf("an encrypted key: error %v\n%s", err, out)
	}

	if _, err := run("diagnose", addr, "--cert", filepath.Join(dir, identity.CertFile)); err == nil || !strings.Contains(err.Error(), "--key") {
		t.Errorf("--cert without --key: %v", err)
	}
	if _, err := run("diagnose"); err == nil || !strings.Contains(err.Error(), "HOST:PORT") {
		t.Errorf("no address: %v", err)
	}
}
