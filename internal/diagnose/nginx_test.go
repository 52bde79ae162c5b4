package diagnose_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/mutual-tls/mutual/internal/diagnose"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testnet"
)

// nginxServer runs nginx on 127.0.0.1 presenting f.server's chain (only
// its leaf when leafOnly), with the extra directives of its server block
// (roots.pem holds f.a's root), in front of a backend that
// answers what wantCert says: 403 "no client certificate" without the
// X-Client-Cert header when wantCert, 200 otherwise. It skips the test
// without nginx.
func nginxServer(t *testing.T, f *fixture, leafOnly, wantCert bool, directives string) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		t.Skip("nginx is not installed")
	}
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if wantCert && r.Header.Get("X-Client-Cert") == "" {
			http.Error(w, "no client certificate presented", http.StatusForbidden)
		}
	}))
	t.Cleanup(backend.Close)
	dir := t.TempDir()
	if err := f.server.Save(filepath.Join(dir, "id")); err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(dir, "id", "cert.pem")
	if leafOnly {
		certFile = filepath.Join(dir, "leaf.pem")
		if err := os.WriteFile(certFile, pki.EncodeCertificates(f.server.Leaf()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "roots.pem"), pki.EncodeCertificates(f.a.Root), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := closedPort(t)
	conf := fmt.Sprintf(`worker_processes 1;
error_log %[1]s/error.log;
pid %[1]s/nginx.pid;
events {}
http {
  access_log off;
  client_body_temp_path %[1]s/tmp; proxy_temp_path %[1]s/tmp; fastcgi_temp_path %[1]s/tmp; uwsgi_temp_path %[1]s/tmp; scgi_temp_path %[1]s/tmp;
  server {
    listen %[2]s ssl;
    ssl_certificate %[5]s;
    ssl_certificate_key %[1]s/id/key.pem;
    %[3]s
    location / { proxy_pass %[4]s; }
  }
}
`, dir, addr, directives, backend.URL, certFile)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// Output to a file, not a pipe: nginx's workers inherit it, and Wait
	// would wait for them. SIGTERM (fast shutdown) makes the master stop
	// its workers before it exits.
	out, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(bin, "-p", dir, "-c", confPath, "-g", "daemon off;")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	testnet.WaitListening(t, addr, func() string {
		log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		stdout, _ := os.ReadFile(out.Name())
		return "nginx did not start:\n" + string(stdout) + string(log)
	})
	return addr
}

// TestNginx: classes 4 and 7 against nginx, which verifies client
// certificates after the handshake and answers 400.
func TestNginx(t *testing.T) {
	const verifyOn = "ssl_client_certificate roots.pem; ssl_verify_client on; ssl_verify_depth 2;"
	const verifyOptional = "ssl_client_certificate roots.pem; ssl_verify_client optional; ssl_verify_depth 2;"
	runCorpus(t, newFixture(t), []corpusCase{
		{
			name: "ok/nginx ssl_verify_client on",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.opts(nginxServer(t, f, false, false, verifyOn))
			},
			want: diagnose.OK, explain: []string{"works"}, fix: []string{"nothing"},
		},
		{
			name: "nginx ssl_verify_client on, no client certificate",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.anonymous(nginxServer(t, f, false, false, verifyOn))
			},
			want: diagnose.ClientCertRequired, explain: []string{"requires a client certificate"}, fix: []string{"--identity-dir"},
		},
		{
			name: "nginx ssl_verify_client optional",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.opts(nginxServer(t, f, false, false, verifyOptional))
			},
			want: diagnose.ClientCertOptional, explain: []string{"does not require"}, fix: []string{"ssl_verify_client on"},
		},
		{
			name: "nginx terminates TLS and drops the client certificate",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.opts(nginxServer(t, f, false, true, ""))
			},
			want: diagnose.ClientCertDropped, explain: []string{"load balancer", "never asks"}, fix: []string{"ssl_verify_client on"},
		},
		{
			name: "nginx sends no intermediate (ssl_certificate with the leaf only)",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.opts(nginxServer(t, f, true, false, ""))
			},
			want: diagnose.MissingIntermediate, explain: []string{"intermediate"}, fix: []string{"ssl_certificate"},
		},
	})
}
