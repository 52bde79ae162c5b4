package agent_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/agent"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// TestHAProxyFromCombinedFile: HAProxy from Debian's packages loads the
// agent's combined PEM file (chain, then key) directly as its crt and
// verifies clients against the bundle written beside it; a workload with
// its own agent-written certificate gets through, one without a
// certificate does not; when the agent rotates the file it reloads HAProxy
// (master-worker, SIGUSR2) and HAProxy serves the new certificate while
// requests keep succeeding.
func TestHAProxyFromCombinedFile(t *testing.T) {
	t.Parallel()
	haproxy := need(t, "/usr/sbin/haproxy", "haproxy")
	e := testenv.StartCA(t, testenv.Options{})
	base := shortDir(t)
	hpDir, clientDir := filepath.Join(base, "haproxy"), filepath.Join(base, "client")
	combined, bundle := filepath.Join(hpDir, "haproxy.pem"), filepath.Join(hpDir, identity.BundleFile)
	pidFile, conf := filepath.Join(base, "haproxy.pid"), filepath.Join(base, "haproxy.cfg")
	port := freePort(t)
	cfg := fmt.Sprintf(`global
	maxconn 64
	pidfile %s
defaults
	mode http
	timeout connect 5s
	timeout client 10s
	timeout server 10s
frontend mtls
	bind 127.0.0.1:%d ssl crt %s ca-file %s verify required
	http-request return status 200 content-type text/plain lf-string "verify=%%[ssl_c_verify]\n"
`, pidFile, port, combined, bundle)
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	hpID, clientID := td+"/ns/prod/haproxy", td+"/ns/prod/client"
	uidSel := fmt.Sprintf("unix:uid:%d", os.Getuid())
	entry(t, e, hpID, td+"/node/hp", 20*time.Second, []string{"haproxy.test"}, uidSel)
	entry(t, e, clientID, td+"/node/hp", 0, nil, uidSel)
	// Before HAProxy runs (the first write) there is no pid to signal.
	reload := fmt.Sprintf("test -s %[1]s && kill -USR2 $(cat %[1]s)", pidFile)
	wHP, err := agent.ParseWriteSpec(hpID + "=" + hpDir + ",format=combined,file=haproxy.pem,reload=" + reload)
	if err != nil {
		t.Fatal(err)
	}
	wClient, err := agent.ParseWriteSpec(clientID + "=" + clientDir)
	if err != nil {
		t.Fatal(err)
	}
	nodeAgent(t, e, "hp", func(c *agent.Config) { c.Writes = []agent.WriteSpec{wHP, wClient} })
	testwait.EventuallyNil(t, func() error { _, err := os.Stat(combined); return err }, combined)
	testwait.EventuallyNil(t, func() error { _, err := identity.Load(clientDir); return err }, "the client's identity in "+clientDir)

	hp := startDaemon(t, "haproxy", exec.Command(haproxy, "-W", "-db", "-f", conf))

	roots := x509.NewCertPool()
	b, err := os.ReadFile(filepath.Join(clientDir, identity.BundleFile))
	if err != nil || !roots.AppendCertsFromPEM(b) {
		t.Fatalf("the client's bundle: %v", err)
	}
	tlsConfig := func(withCert bool) *tls.Config {
		c := &tls.Config{ServerName: "haproxy.test", RootCAs: roots}
		if withCert {
			c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				id, err := identity.Load(clientDir)
				if err != nil {
					return nil, err
				}
				tc := id.TLSCertificate()
				return &tc, nil
			}
		}
		return c
	}
	// get asks HAProxy for / and returns the serial of the certificate it
	// presented.
	get := func(withCert bool) (string, error) {
		var served string
		cfg := tlsConfig(withCert)
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			leaf := cs.PeerCertificates[0]
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != hpID {
				return fmt.Errorf("haproxy presents %v, want %s", leaf.URIs, hpID)
			}
			served = serialOf(leaf)
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true,
			DialContext: (&net.Dialer{}).DialContext}}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d/", port), nil)
		if err != nil {
			return "", err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "verify=0" {
			return "", fmt.Errorf("haproxy answered %s: %s", resp.Status, body)
		}
		return served, nil
	}

	var s0 string
	testwait.EventuallyNil(t, func() (err error) {
		hp.alive(t)
		s0, err = get(true)
		return err
	}, "haproxy answering a client with a certificate")
	if _, err := get(false); err == nil {
		t.Error("haproxy let a client without a certificate through")
	}

	// The agent rotates the file (20 s certificates) and reloads HAProxy,
	// which serves the new certificate; every request in between succeeds.
	calls := 0
	testwait.Eventually(t, func() bool {
		hp.alive(t)
		s, err := get(true)
		if err != nil {
			t.Fatalf("a request failed during rotation (after %d good ones): %v", calls, err)
		}
		calls++
		return s != s0
	}, "haproxy to serve a rotated certificate")
	// What HAProxy serves is what the agent wrote last (a last reload may
	// be under way).
	testwait.EventuallyNil(t, func() error {
		hp.alive(t)
		s, err := get(true)
		if err != nil {
			return err
		}
		if want, err := combinedLeafSerial(combined); err != nil || s != want {
			return fmt.Errorf("haproxy serves %s, the file holds %s (%v)", s, want, err)
		}
		return nil
	}, "haproxy serving the certificate in the combined file")
}

// combinedLeafSerial is the serial of the first certificate in a combined
// PEM file.
func combinedLeafSerial(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return "", fmt.Errorf("%s does not start with a certificate", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", err
	}
	return serialOf(c), nil
}
