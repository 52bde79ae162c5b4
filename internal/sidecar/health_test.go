package sidecar_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/sidecar"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testport"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// dirWithCRL writes an identity directory whose leaf names crlURL as its
// CRL distribution point (no mutual.json), as the agent writes it.
func dirWithCRL(t *testing.T, ca *testca.CA, id, crlURL string) string {
	t.Helper()
	key, err := pki.GenerateKey(pki.KeyECDSAP256, nil)
	if err != nil {
		t.Fatal(err)
	}
	sid := spiffeid.RequireFromString(id)
	leaf, err := ca.Issuer.Issue(pki.Leaf{ID: sid, PublicKey: key.Public(), TTL: time.Hour, Now: time.Now(),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, CRLDistributionPoints: []string{crlURL}})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "id")
	me := &identity.Identity{ID: sid, Chain: []*x509.Certificate{leaf, ca.Issuer.Cert}, Key: key, Roots: []*x509.Certificate{ca.Root}}
	if err := me.Save(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// dirWithCRLDown writes an identity directory (as dirWithCRL) whose CRL
// answers 503, as a CA that cannot be reached, until the test sets up.
func dirWithCRLDown(t *testing.T, ca *testca.CA) (dir string, up *atomic.Bool) {
	t.Helper()
	up = new(atomic.Bool)
	crl := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			http.Error(w, "CA down", http.StatusServiceUnavailable)
			return
		}
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(time.Now().UnixNano()),
			ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(10 * time.Minute)}, ca.Issuer.Cert, ca.Issuer.Key)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Write(der)
	}))
	t.Cleanup(crl.Close)
	return dirWithCRL(t, ca, apiID, crl.URL+"/crl/"+revocation.IssuerKeyID(ca.Issuer.Cert)+".crl"), up
}

// runForHealth runs the sidecar cfg (its log and metrics set here) until
// the test ends and returns its metrics listener's base URL.
func runForHealth(t *testing.T, cfg sidecar.Config) string {
	t.Helper()
	var logs *testlog.Buffer
	cfg.Log, logs = testlog.NewJSON(t, "sidecar")
	cfg.Listen, cfg.Metrics = testport.Addr(t), "127.0.0.1:0"
	started := runSidecarUntil(t, cfg, logs, "proxy starting")
	return strings.TrimSuffix(started["metrics"].(string), "/metrics")
}

// runSidecar runs the sidecar cfg, whose log is logs, until the test ends
// (failing it if Run then returns an error), and returns its "proxy
// listening" record.
func runSidecar(t *testing.T, cfg sidecar.Config, logs *testlog.Buffer) map[string]any {
	t.Helper()
	return runSidecarUntil(t, cfg, logs, "proxy listening")
}

// runSidecarUntil runs the sidecar cfg, whose log is logs, until the test
// ends (failing it if Run then returns an error), and returns its first
// record with msg.
func runSidecarUntil(t *testing.T, cfg sidecar.Config, logs *testlog.Buffer, msg string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sidecar.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return waitRecord(t, logs, msg, done)
}

// health answers GET path on a metrics base URL: status and body.
func health(t *testing.T, base, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHealthFollowsRevocationSource: /livez answers 200 from the start;
// /readyz is 503 while the CA cannot be reached (at start, no CRL yet) and
// says so, and 200 once a CRL vouches for the revocation status.
func TestHealthFollowsRevocationSource(t *testing.T) {
	ca := testca.New(t)
	dir, up := dirWithCRLDown(t, ca)
	allow, err := authz.FromPatterns([]string{webID})
	if err != nil {
		t.Fatal(err)
	}
	base := runForHealth(t, sidecar.Config{
		Source:     sidecar.Source{IdentityDir: dir},
		Revocation: sidecar.Revocation{CRLInterval: 50 * time.Millisecond},
		Inbound:    &sidecar.Inbound{Target: testnet.Echo(t), Allow: allow, Mode: proxy.Strict, Protocol: proxy.TCP},
	})

	if code, body := health(t, base, "/livez"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/livez while the CA is unreachable: %d %q", code, body)
	}
	code, body := health(t, base, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "revocation status unknown") || !strings.Contains(body, "is the CA reachable?") {
		t.Errorf("/readyz while the CA is unreachable: %d %q, want 503 saying why", code, body)
	}

	up.Store(true)
	testwait.Eventually(t, func() bool {
		code, body = health(t, base, "/readyz")
		return code == http.StatusOK
	}, "/readyz to become ready once the CRL is served")
	if body != "ready\n" {
		t.Errorf("/readyz ready: %q", body)
	}
	if code, _ := health(t, base, "/livez"); code != http.StatusOK {
		t.Errorf("/livez when ready: %d", code)
	}
}

// TestHealthExpiredIdentity: a proxy whose certificate has expired (and
// revocation off) is alive but not ready, and says why.
func TestHealthExpiredIdentity(t *testing.T) {
	ca := testca.New(t)
	dir := t.TempDir()
	if err := ca.Leaf(t, apiID, testca.Expired()).Save(dir); err != nil {
		t.Fatal(err)
	}
	expect, err := authz.ParsePattern(webID)
	if err != nil {
		t.Fatal(err)
	}
	base := runForHealth(t, sidecar.Config{
		Source: sidecar.Source{IdentityDir: dir}, Revocation: sidecar.Revocation{Off: true},
		Outbound: &sidecar.Outbound{Target: "127.0.0.1:1", Expect: []authz.Pattern{expect}},
	})
	if code, _ := health(t, base, "/livez"); code != http.StatusOK {
		t.Errorf("/livez: %d", code)
	}
	if code, body := health(t, base, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "valid only from") {
		t.Errorf("/readyz with an expired certificate: %d %q", code, body)
	}
}
