package agent_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/agent"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testport"
	"github.com/mutual-tls/mutual/internal/testwait"
)

const nginxBin = "/usr/sbin/nginx"

var aptOnce sync.Once

// need makes sure a program from Debian's packages is installed, installing
// pkg when root; without it the test fails in CI and is skipped elsewhere.
func need(t *testing.T, bin, pkg string) string {
	t.Helper()
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	var out []byte
	var err error
	if os.Geteuid() == 0 {
		aptOnce.Do(func() {
			exec.Command("apt-get", "update").Run()
		})
		cmd := exec.Command("apt-get", "install", "-y", "--no-install-recommends", pkg)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err = cmd.CombinedOutput()
		if _, serr := os.Stat(bin); serr == nil {
			return bin
		}
	}
	msg := fmt.Sprintf("%s is missing and cannot be installed (apt-get install %s: %v %s)", bin, pkg, err, bytes.TrimSpace(out))
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// freePort is a port reserved for t that nginx binds later (see testport).
func freePort(t *testing.T) int {
	t.Helper()
	return testport.Port(t)
}

// TestNginxFromAgentFiles: nginx from Debian's packages serves mTLS from
// the files the agent writes (--write ...,reload=nginx -s reload), curl
// presents a workload certificate the agent wrote for another entry, and
// across a rotation nginx serves the new certificate while curl keeps
// getting 200.
func TestNginxFromAgentFiles(t *testing.T) {
	t.Parallel()
	nginx := need(t, nginxBin, "nginx")
	curl := need(t, "/usr/bin/curl", "curl")

	e := testenv.StartCA(t, testenv.Options{})
	base := shortDir(t)
	ngDir := filepath.Join(base, "nginx")
	for _, d := range []string{"tmp", "logs"} {
		if err := os.MkdirAll(filepath.Join(ngDir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tlsDir := filepath.Join(base, "nginx-tls")
	curlDir := filepath.Join(base, "curl-tls")
	conf := filepath.Join(ngDir, "nginx.conf")
	errLog := filepath.Join(ngDir, "logs", "error.log")
	port := freePort(t)
	userLine := ""
	if os.Geteuid() == 0 {
		userLine = "user root;"
	}
	cfg := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
%[1]s
pid %[2]s/nginx.pid;
error_log %[3]s info;
events { worker_connections 64; }
http {
    access_log %[2]s/logs/access.log;
    client_body_temp_path %[2]s/tmp/body;
    proxy_temp_path %[2]s/tmp/proxy;
    fastcgi_temp_path %[2]s/tmp/fastcgi;
    uwsgi_temp_path %[2]s/tmp/uwsgi;
    scgi_temp_path %[2]s/tmp/scgi;
    server {
        listen 127.0.0.1:%[4]d ssl;
        server_name nginx.test;
        ssl_certificate %[5]s/cert.pem;
        ssl_certificate_key %[5]s/key.pem;
        ssl_client_certificate %[5]s/bundle.pem;
        ssl_verify_client on;
        ssl_verify_depth 3;
        location / {
            default_type text/plain;
            return 200 "verify=$ssl_client_verify serial=$ssl_client_serial\n";
        }
    }
}
`, userLine, ngDir, errLog, port, tlsDir)
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	nginxCmd := func(args ...string) string {
		return strings.Join(append([]string{nginx, "-e", errLog, "-p", ngDir, "-c", conf}, args...), " ")
	}

	nginxID := td + "/ns/prod/nginx"
	curlID := td + "/ns/prod/curl"
	uidSel := fmt.Sprintf("unix:uid:%d", os.Getuid())
	entry(t, e, nginxID, td+"/node/web-1", 20*time.Second, []string{"nginx.test"}, uidSel)
	entry(t, e, curlID, td+"/node/web-1", 0, nil, uidSel)
	wNginx, err := agent.ParseWriteSpec(nginxID + "=" + tlsDir + ",mode=0600,reload=" + nginxCmd("-s", "reload"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(wNginx.Reload, "-s reload") || wNginx.Mode != 0o600 || wNginx.Dir != tlsDir {
		t.Fatalf("ParseWriteSpec: %+v", wNginx)
	}
	wCurl, err := agent.ParseWriteSpec(curlID + "=" + curlDir)
	if err != nil {
		t.Fatal(err)
	}
	nodeAgent(t, e, "web-1", func(c *agent.Config) { c.Writes = []agent.WriteSpec{wNginx, wCurl} })

	for _, d := range []string{tlsDir, curlDir} {
		testwait.EventuallyNil(t, func() error {
			_, err := identity.Load(d)
			return err
		}, "identity files in "+d)
	}
	st, err := os.Stat(filepath.Join(tlsDir, identity.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %o, want 0600", st.Mode().Perm())
	}

	// nginx, in the foreground, stopped at the end; its error.log is shown
	// on failure (registered first, so it runs after nginx has stopped).
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(errLog)
			t.Logf("nginx error.log:\n%s", b)
		}
	})
	ng := startDaemon(t, "nginx", exec.Command(nginx, "-e", errLog, "-p", ngDir, "-c", conf))

	curlGet := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, curl, "-sS", "--max-time", "10",
			"--cacert", filepath.Join(curlDir, identity.BundleFile),
			"--cert", filepath.Join(curlDir, identity.CertFile), "--key", filepath.Join(curlDir, identity.KeyFile),
			"--resolve", fmt.Sprintf("nginx.test:%d:127.0.0.1", port),
			"-w", "\nHTTP %{http_code}", fmt.Sprintf("https://nginx.test:%d/", port)).CombinedOutput()
		s := strings.TrimSpace(string(out))
		if err != nil {
			return s, fmt.Errorf("curl: %v: %s", err, s)
		}
		if !strings.HasSuffix(s, "HTTP 200") || !strings.Contains(s, "verify=SUCCESS") {
			return s, fmt.Errorf("curl: %s", s)
		}
		return s, nil
	}
	// servedSerial reads the certificate nginx presents, verified as curl does.
	servedSerial := func() (string, error) {
		bundle, err := os.ReadFile(filepath.Join(curlDir, identity.BundleFile))
		if err != nil {
			return "", err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(bundle)
		cert, err := tls.LoadX509KeyPair(filepath.Join(curlDir, identity.CertFile), filepath.Join(curlDir, identity.KeyFile))
		if err != nil {
			return "", err
		}
		d := &net.Dialer{Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{ServerName: "nginx.test", RootCAs: pool, Certificates: []tls.Certificate{cert}})
		if err != nil {
			return "", err
		}
		defer c.Close()
		leaf := c.ConnectionState().PeerCertificates[0]
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != nginxID {
			return "", fmt.Errorf("nginx serves %v, want %s", leaf.URIs, nginxID)
		}
		return serialOf(leaf), nil
	}

	testwait.EventuallyNil(t, func() error {
		ng.alive(t)
		_, err := curlGet()
		return err
	}, "nginx answering curl with 200")
	s0, err := servedSerial()
	if err != nil {
		t.Fatal(err)
	}

	// A client without a certificate, or with one from another CA, is refused.
	out, _ := exec.Command(curl, "-sS", "--max-time", "10", "--cacert", filepath.Join(curlDir, identity.BundleFile),
		"--resolve", fmt.Sprintf("nginx.test:%d:127.0.0.1", port), "-w", "\nHTTP %{http_code}", fmt.Sprintf("https://nginx.test:%d/", port)).CombinedOutput()
	if !strings.Contains(string(out), "HTTP 400") {
		t.Errorf("curl without a client certificate: want nginx's 400, got %s", out)
	}

	// Across a rotation (20s certificates): nginx is reloaded with the new
	// files, and every curl gets 200.
	calls := 0
	testwait.Eventually(t, func() bool {
		if _, err := curlGet(); err != nil {
			t.Fatalf("curl failed during rotation (after %d good calls): %v", calls, err)
		}
		calls++
		s, err := servedSerial()
		if err != nil {
			t.Fatalf("read nginx's certificate: %v", err)
		}
		if s == s0 {
			return false
		}
		t.Logf("nginx serves %s after %s, %d curl calls", s, s0, calls)
		return true
	}, "nginx to serve a rotated certificate (20s certificates)")
	for i := 0; i < 3; i++ {
		if _, err := curlGet(); err != nil {
			t.Fatalf("curl after rotation: %v", err)
		}
	}
	// What nginx serves is what the agent wrote (give a last reload time).
	testwait.EventuallyNil(t, func() error {
		id, err := identity.Load(tlsDir)
		if err != nil {
			return err
		}
		s, err := servedSerial()
		if err != nil {
			return err
		}
		if want := serialOf(id.Leaf()); s != want {
			return fmt.Errorf("nginx serves %s, disk has %s", s, want)
		}
		return nil
	}, "nginx serving the certificate on disk")
}
