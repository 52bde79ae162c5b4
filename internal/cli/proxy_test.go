package cli_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/cli"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testport"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// running is `mutual proxy ...` run in-process until the test ends.
type running struct {
	stderr *testlog.Buffer
	done   chan error
}

func startMutual(t *testing.T, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{stderr: &testlog.Buffer{}, done: make(chan error, 1)}
	go func() { r.done <- cli.Run(ctx, args, strings.NewReader(""), io.Discard, r.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("mutual did not stop 30 s after its context was cancelled")
		}
	})
	return r
}

// listening waits until the proxy logs that it listens; it fails the test
// if the command ends first.
func (r *running) listening(t *testing.T) {
	t.Helper()
	r.waitLog(t, `"msg":"proxy listening"`)
}

// waitLog waits until the command's log holds s; it fails the test if the
// command ends first.
func (r *running) waitLog(t *testing.T, s string) {
	t.Helper()
	testwait.Eventually(t, func() bool {
		select {
		case err := <-r.done:
			t.Fatalf("mutual exited before its log said %s: %v\n%s", s, err, r.stderr)
		default:
		}
		return r.stderr.Contains(s)
	}, "the log to say "+s)
}

// freeAddr is a loopback address reserved for the test, which the command
// binds later (see testport).
func freeAddr(t *testing.T) string { return testport.Addr(t) }

// agentStyleDir writes an identity directory as the agent writes it: the
// certificate, key and bundle, and no mutual.json. The leaf carries a CRL
// distribution point crlURL when it is not empty.
func agentStyleDir(t *testing.T, c *testca.CA, id, crlURL string) string {
	t.Helper()
	opts := []testca.LeafOption{testca.IP("127.0.0.1")}
	if crlURL != "" {
		opts = append(opts, testca.Edit(func(x *x509.Certificate) { x.CRLDistributionPoints = []string{crlURL} }))
	}
	dir := filepath.Join(t.TempDir(), "id")
	if err := c.Leaf(t, id, opts...).Save(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestProxyRefusesToRunWithoutRevocation: a proxy given an identity
// directory written by the agent (no mutual.json) whose certificate names
// no CRL or OCSP address has no way to learn of revocations: it must not
// start, unless --no-revocation says so.
func TestProxyRefusesToRunWithoutRevocation(t *testing.T) {
	c := testca.New(t)
	dir := agentStyleDir(t, c, "spiffe://example.org/ns/prod/proxy", "")
	target := testnet.Echo(t)
	args := []string{"proxy", "inbound", "--identity-dir", dir, "--target", target, "--allow", "spiffe://example.org/ns/prod/*"}
	var stderr testlog.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := cli.Run(ctx, append(args, "--listen", freeAddr(t)), strings.NewReader(""), io.Discard, &stderr)
	if err == nil {
		t.Fatal("BUG: the proxy ran without any revocation source")
	}
	if !strings.Contains(err.Error(), "no revocation source") || !strings.Contains(err.Error(), "--no-revocation") {
		t.Errorf("error %q: want it to say there is no revocation source and name --no-revocation", err)
	}
	out := []string{"proxy", "outbound", "--identity-dir", dir, "--target", "127.0.0.1:1", "--expect", "spiffe://example.org/ns/prod/*", "--listen", freeAddr(t)}
	if err := cli.Run(ctx, out, strings.NewReader(""), io.Discard, &stderr); err == nil || !strings.Contains(err.Error(), "no revocation source") {
		t.Errorf("outbound proxy without a revocation source: %v", err)
	}

	// Told explicitly, it runs, and says so.
	r := startMutual(t, append(args, "--listen", freeAddr(t), "--no-revocation")...)
	r.listening(t)
	if !strings.Contains(r.stderr.String(), "revocation checks are off") {
		t.Errorf("no warning that revocation is off:\n%s", r.stderr)
	}
}

// TestProxyFollowsCRLFromItsCertificate: a proxy whose identity directory
// has no mutual.json (as the agent writes it) finds the CRL through the
// distribution point in its own certificate and refuses a revoked client;
// a client revoked later is refused at its next connection.
func TestProxyFollowsCRLFromItsCertificate(t *testing.T) {
	c := testca.New(t)
	good := c.Leaf(t, "spiffe://example.org/ns/prod/good")
	bad := c.Leaf(t, "spiffe://example.org/ns/prod/bad")
	later := c.Leaf(t, "spiffe://example.org/ns/prod/later")
	var mu sync.Mutex
	number := int64(1)
	revoked := []*big.Int{bad.Leaf().SerialNumber}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		var entries []x509.RevocationListEntry
		for _, s := range revoked {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now().Add(-time.Minute)})
		}
		number++
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(number), ThisUpdate: time.Now().Add(-time.Minute),
			NextUpdate: time.Now().Add(10 * time.Minute), RevokedCertificateEntries: entries}, c.Issuer.Cert, c.Issuer.Key)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Write(der)
	}))
	t.Cleanup(srv.Close)
	crlURL := srv.URL + "/crl/" + revocation.IssuerKeyID(c.Issuer.Cert) + ".crl"
	dir := agentStyleDir(t, c, "spiffe://example.org/ns/prod/proxy", crlURL)
	listen := freeAddr(t)
	r := startMutual(t, "proxy", "inbound", "--identity-dir", dir, "--target", testnet.Echo(t), "--listen", listen,
		"--allow", "spiffe://example.org/ns/prod/*", "--crl-interval", "100ms")
	r.listening(t)
	if !strings.Contains(r.stderr.String(), crlURL) {
		t.Errorf("the proxy does not say it follows %s:\n%s", crlURL, r.stderr)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.Root)
	works := func(id *identity.Identity) bool {
		tc := id.TLSCertificate()
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", listen,
			&tls.Config{Certificates: []tls.Certificate{tc}, RootCAs: pool, ServerName: "127.0.0.1"})
		if err != nil {
			return false
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(conn, "x"); err != nil {
			return false
		}
		b := make([]byte, 1)
		_, err = io.ReadFull(conn, b)
		return err == nil
	}
	testwait.Eventually(t, func() bool { return works(good) }, "a good client to get through")
	if works(bad) {
		t.Fatal("BUG: a client revoked on the CRL named in the proxy's certificate got through")
	}
	if !works(later) {
		t.Fatal("a client not yet revoked was refused")
	}
	mu.Lock()
	revoked = append(revoked, later.Leaf().SerialNumber)
	mu.Unlock()
	testwait.Eventually(t, func() bool { return !works(later) }, "a client revoked on the CRL later to be refused")
}
