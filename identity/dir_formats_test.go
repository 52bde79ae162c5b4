package identity_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/testopenssl"
)

// openssl runs openssl, failing the test on an error.
func openssl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := testopenssl.Run(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// matches fails the test when the key in keyPath is not that of the
// certificate in certPath.
func matches(t *testing.T, certPath, keyPath string) {
	t.Helper()
	if err := testopenssl.KeyMatchesCert(t, certPath, keyPath); err != nil {
		t.Error(err)
	}
}

// TestWriteDirFormats: each format read by openssl, the key matching the
// certificate, under the names asked for.
func TestWriteDirFormats(t *testing.T) {
	ca := newCA(t)
	id := issue(t, ca, "spiffe://example.org/ns/prod/web")

	t.Run("pem with Kubernetes names", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "web")
		o := identity.WriteOptions{Names: identity.Names{Cert: "tls.crt", Key: "tls.key", Bundle: "ca.crt"}}
		if err := identity.WriteDir(dir, id, o); err != nil {
			t.Fatal(err)
		}
		matches(t, filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
		openssl(t, "x509", "-in", filepath.Join(dir, "ca.crt"), "-noout")
		if _, err := os.Stat(filepath.Join(dir, identity.CertFile)); err == nil {
			t.Error("cert.pem was written beside tls.crt")
		}
	})

	t.Run("combined", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "web")
		if err := identity.WriteDir(dir, id, identity.WriteOptions{Format: identity.FormatCombined}); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, "combined.pem")
		if got := mode(t, f); got != 0o600 {
			t.Errorf("combined.pem is mode %o, want 0600 (it holds the key)", got)
		}
		matches(t, f, f)
		if !strings.Contains(openssl(t, "x509", "-in", f, "-noout", "-ext", "subjectAltName"), "spiffe://example.org/ns/prod/web") {
			t.Error("the first certificate of combined.pem is not the leaf")
		}
	})

	t.Run("pkcs12", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "web")
		pw := filepath.Join(t.TempDir(), "pw")
		if err := os.WriteFile(pw, []byte("s3cret pass\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		o := identity.WriteOptions{Format: identity.FormatPKCS12, Password: "s3cret pass", Names: identity.Names{File: "keystore.p12"}}
		if err := identity.WriteDir(dir, id, o); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, "keystore.p12")
		info := openssl(t, "pkcs12", "-info", "-in", f, "-passin", "file:"+pw, "-noenc")
		if !strings.Contains(info, "PRIVATE KEY") || !strings.Contains(info, "BEGIN CERTIFICATE") {
			t.Fatalf("openssl pkcs12 -info shows no key or certificate:\n%s", info)
		}
		// The key openssl takes out of the file is that of the certificate.
		out := filepath.Join(t.TempDir(), "out.pem")
		openssl(t, "pkcs12", "-in", f, "-passin", "file:"+pw, "-noenc", "-out", out)
		matches(t, out, out)
		// A wrong password is refused.
		bad := filepath.Join(t.TempDir(), "bad")
		os.WriteFile(bad, []byte("wrong\n"), 0o600)
		if err := exec.Command("openssl", "pkcs12", "-info", "-in", f, "-passin", "file:"+bad, "-noenc").Run(); err == nil {
			t.Error("openssl read the PKCS#12 file with a wrong password")
		}
	})

	t.Run("a format change leaves no stale names", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "web")
		if err := identity.WriteDir(dir, id, identity.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := identity.WriteDir(dir, id, identity.WriteOptions{Format: identity.FormatCombined}); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{identity.CertFile, identity.KeyFile} {
			if _, err := os.Lstat(filepath.Join(dir, n)); err == nil {
				t.Errorf("%s is left from the pem set", n)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "combined.pem")); err != nil {
			t.Error(err)
		}
	})

	t.Run("refused", func(t *testing.T) {
		for name, o := range map[string]identity.WriteOptions{
			"pkcs12 without a password": {Format: identity.FormatPKCS12},
			"unknown format":            {Format: "jks"},
			"a path as a name":          {Names: identity.Names{Cert: "../cert.pem"}},
			"two files one name":        {Names: identity.Names{Cert: "tls.pem", Key: "tls.pem"}},
		} {
			if err := identity.WriteDir(filepath.Join(t.TempDir(), "web"), id, o); err == nil {
				t.Errorf("%s: written", name)
			}
		}
	})
}
