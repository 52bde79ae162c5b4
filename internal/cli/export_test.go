package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/identity/identitytest"
	"github.com/mutual-tls/mutual/internal/testopenssl"
)

// TestCertExport: `mutual cert export` writes a PKCS#12 file that openssl
// reads with the password file, and a combined PEM file whose key is its
// certificate's, both 0600.
func TestCertExport(t *testing.T) {
	testopenssl.Need(t)
	ca, err := identitytest.NewCA("example.org")
	if err != nil {
		t.Fatal(err)
	}
	id, err := ca.Issue("spiffe://example.org/ns/prod/java")
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	dir := filepath.Join(base, "java")
	if err := id.Save(dir); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(base, "pass")
	if err := os.WriteFile(pw, []byte("changeit\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p12, combined := filepath.Join(base, "java.p12"), filepath.Join(base, "java.pem")
	if out, err := run("cert", "export", "--dir", dir, "--p12", p12, "--password-file", pw, "--combined", combined); err != nil {
		t.Fatalf("cert export: %v\n%s", err, out)
	}
	info, err := testopenssl.Run(t, "pkcs12", "-info", "-in", p12, "-passin", "file:"+pw, "-noenc")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info, "BEGIN PRIVATE KEY") || !strings.Contains(info, "BEGIN CERTIFICATE") {
		t.Errorf("openssl pkcs12 -info does not show the key and the certificate:\n%s", info)
	}
	if err := testopenssl.KeyMatchesCert(t, combined, combined); err != nil {
		t.Error(err)
	}
	for _, f := range []string{p12, combined} {
		if st, err := os.Stat(f); err != nil {
			t.Error(err)
		} else if st.Mode().Perm() != 0o600 {
			t.Errorf("%s is mode %o, want 0600", f, st.Mode().Perm())
		}
	}
	if out, err := run("cert", "export", "--dir", dir, "--p12", p12); err == nil || !strings.Contains(out+err.Error(), "password-file") {
		t.Errorf("--p12 without --password-file: %v %s", err, out)
	}
}
