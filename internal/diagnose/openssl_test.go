package diagnose_test

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/diagnose"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testnet"
)

// opensslServer runs `openssl s_server -www` on 127.0.0.1 presenting
// server, with extra arguments (client verification), and returns its
// address once it accepts connections. It skips the test without openssl.
func opensslServer(t *testing.T, server *identity.Identity, extra ...string) string {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed")
	}
	dir := t.TempDir()
	if err := server.Save(dir); err != nil {
		t.Fatal(err)
	}
	addr := closedPort(t)
	args := append([]string{"s_server", "-accept", addr, "-www", "-verify_return_error", "-cert", filepath.Join(dir, identity.CertFile), "-key", filepath.Join(dir, identity.KeyFile)}, extra...)
	cmd := exec.Command("openssl", args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	testnet.WaitListening(t, addr, func() string { return "openssl s_server did not start:\n" + out.String() })
	return addr
}

// writePEM writes certificates (or, with typ "X509 CRL", one CRL) to a file.
func writePEM(t *testing.T, typ string, ders ...[]byte) string {
	t.Helper()
	var b []byte
	for _, d := range ders {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: d})...)
	}
	p := filepath.Join(t.TempDir(), "file.pem")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestOpenSSLServer: the client side of classes 1 and 2 against OpenSSL,
// which names its verdicts in its alerts (unknown_ca, certificate_revoked).
func TestOpenSSLServer(t *testing.T) {
	// chain makes s_server send the intermediate after the leaf (its -cert
	// sends the first certificate of the file only).
	chain := func(t *testing.T, f *fixture) []string {
		return []string{"-cert_chain", writePEM(t, "CERTIFICATE", f.a.Intermediate.Raw)}
	}
	runCorpus(t, newFixture(t), []corpusCase{
		{
			name: "ok/openssl s_server -Verify",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.opts(opensslServer(t, f.server, append(chain(t, f), "-Verify", "1", "-CAfile", writePEM(t, "CERTIFICATE", f.a.Root.Raw))...))
			},
			want: diagnose.OK, explain: []string{"works"}, fix: []string{"nothing"},
		},
		{
			name: "openssl s_server without -cert_chain sends no intermediate",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.opts(opensslServer(t, f.server, "-Verify", "1", "-CAfile", writePEM(t, "CERTIFICATE", f.a.Root.Raw)))
			},
			want: diagnose.MissingIntermediate, explain: []string{"intermediate"}, fix: []string{"full chain"},
		},
		{
			// The server trusts a root of the same name as the client's, made
			// anew: OpenSSL lists that name and answers unknown_ca.
			name: "root rotated on the server's side only (client refused)",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				rotated := testca.New(t)
				return f.opts(opensslServer(t, f.server, append(chain(t, f), "-Verify", "1", "-CAfile", writePEM(t, "CERTIFICATE", rotated.Root.Raw))...))
			},
			want: diagnose.RootRotated, explain: []string{"rotated on one side", "example.org root CA"}, fix: []string{"bundle"},
		},
		{
			name: "client revoked, openssl s_server checks the CRL",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour),
					RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: f.client.Leaf().SerialNumber, RevocationTime: time.Now().Add(-time.Minute)}}}
				crl, err := x509.CreateRevocationList(rand.Reader, tmpl, f.a.Issuer.Cert, f.a.Issuer.Key)
				if err != nil {
					t.Fatal(err)
				}
				// -crl_check checks the leaf's CRL only.
				return f.opts(opensslServer(t, f.server, append(chain(t, f), "-Verify", "2", "-CAfile", writePEM(t, "CERTIFICATE", f.a.Root.Raw),
					"-CRL", writePEM(t, "X509 CRL", crl), "-crl_check")...))
			},
			want: diagnose.ClientCertRevoked, explain: []string{"revoked"}, fix: []string{"enroll again"},
		},
	})
}
