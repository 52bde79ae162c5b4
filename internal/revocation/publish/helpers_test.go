package publish_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testenv"
)

// caEnv is a running CA service on loopback (testenv), with the plain-HTTP
// CRL/OCSP listener so that certificates carry http:// URLs, and its
// operator.
type caEnv struct{ *testenv.CA }

// startCA runs a CA service on the store at storeURL ("" = SQLite in the CA
// directory). It stops when the test ends (after anything the test
// registered later, such as watchers subscribed to its feed).
func startCA(t testing.TB, storeURL string) *caEnv {
	t.Helper()
	return startCAWith(t, nil, storeURL)
}

// startCAWith runs a CA service for the CA c (several may run for one CA:
// replicas sharing a PostgreSQL store); nil makes a fresh CA.
func startCAWith(t testing.TB, c *testca.CA, storeURL string) *caEnv {
	t.Helper()
	return &caEnv{testenv.StartCA(t, testenv.Options{CA: c, StoreURL: storeURL, HTTP: true})}
}

// revoke revokes one certificate through the admin API.
func (e *caEnv) revoke(t testing.TB, cert *x509.Certificate, reason string) *api.RevokeResponse {
	t.Helper()
	resp, err := e.Admin.Revoke(context.Background(), api.RevokeRequest{Serial: serialOf(cert), Reason: reason})
	if err != nil {
		t.Fatalf("revoke %s: %v", serialOf(cert), err)
	}
	return resp
}

// crlURL and ocspURL are what issued certificates point at.
func (e *caEnv) crlURL() string {
	return e.HTTPURL + "/crl/" + revocation.IssuerKeyID(e.Intermediate) + ".crl"
}

func (e *caEnv) ocspURL() string { return e.HTTPURL + "/ocsp" }

// clientTLS is a TLS client configuration presenting id and trusting its roots.
func clientTLS(id *identity.Identity, serverName string) *tls.Config {
	tc := id.TLSCertificate()
	return &tls.Config{Certificates: []tls.Certificate{tc}, RootCAs: id.RootPool(), ServerName: serverName, MinVersion: tls.VersionTLS12}
}

func serialOf(c *x509.Certificate) string { return pki.FormatSerial(c.SerialNumber) }

// httpGet fetches u with a plain client and returns the status, headers and body.
func httpGet(t testing.TB, u string) (int, http.Header, []byte) {
	t.Helper()
	hc := &http.Client{Timeout: 15 * time.Second}
	resp, err := hc.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return resp.StatusCode, resp.Header, b
}

// fetchCRL downloads and parses the DER CRL.
func (e *caEnv) fetchCRL(t testing.TB) (*x509.RevocationList, []byte) {
	t.Helper()
	st, _, der := httpGet(t, e.crlURL())
	if st != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d: %s", e.crlURL(), st, der)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("x509.ParseRevocationList: %v", err)
	}
	return crl, der
}

func crlHas(crl *x509.RevocationList, c *x509.Certificate) (x509.RevocationListEntry, bool) {
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(c.SerialNumber) == 0 {
			return e, true
		}
	}
	return x509.RevocationListEntry{}, false
}

// writePEM writes certificates as PEM into dir/name and returns the path.
func writePEM(t testing.TB, dir, name string, certs ...*x509.Certificate) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pki.EncodeCertificates(certs...), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeCRLPEM(t testing.TB, dir, name string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// openssl returns the path of the openssl binary: a failure under CI when it
// is missing, a skip elsewhere.
func openssl(t testing.TB) string {
	t.Helper()
	const bin = "/usr/bin/openssl"
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if p, err := exec.LookPath("openssl"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("openssl not found; CI must install it")
	}
	t.Skip("openssl not found: install it to run this test (CI does)")
	return ""
}

// runOpenSSL runs openssl with args and returns its combined output and
// whether it exited 0.
func runOpenSSL(t testing.TB, args ...string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, openssl(t), args...).CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("openssl %s: %v", strings.Join(args, " "), err)
	}
	return string(out), err == nil
}

// feedStream is an open subscription to /v1/revocations.
type feedStream struct {
	resp  *http.Response
	lines chan []byte
	errc  chan error
}

// feedClient is an HTTPS client for the CA's API presenting id (nil: no
// client certificate) and trusting roots.
func feedClient(roots []*x509.Certificate, id *identity.Identity) *http.Client {
	cfg := &tls.Config{RootCAs: pki.CertPool(roots), MinVersion: tls.VersionTLS12}
	if id != nil {
		cfg.Certificates = []tls.Certificate{id.TLSCertificate()}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
}

// subscribe opens the feed from since; the stream is closed when the test ends.
func (e *caEnv) subscribe(t testing.TB, hc *http.Client, since int64) (*feedStream, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/v1/revocations?since=%d", e.URL, since), nil)
	resp, err := hc.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	fs := &feedStream{resp: resp, lines: make(chan []byte, 1024), errc: make(chan error, 1)}
	read := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-read
		hc.CloseIdleConnections()
	})
	if resp.StatusCode != http.StatusOK {
		close(read)
		return fs, nil
	}
	// The reader ends when the body does (at the latest when the test
	// ends and the cleanup above closes it), and the cleanup waits for it.
	go func() {
		defer close(read)
		defer close(fs.lines)
		br := bufio.NewReader(resp.Body)
		for {
			line, err := br.ReadBytes('\n')
			if len(bytes.TrimSpace(line)) > 0 {
				select {
				case fs.lines <- line:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				fs.errc <- err
				return
			}
		}
	}()
	return fs, nil
}

// next reads one event from the stream (10 s safety timeout).
func (fs *feedStream) next(t testing.TB) revocation.Event {
	t.Helper()
	select {
	case line, ok := <-fs.lines:
		if !ok {
			t.Fatalf("feed ended: %v", <-fs.errc)
		}
		var ev revocation.Event
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("feed line %q: %v", line, err)
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no feed line within 10 s")
	}
	return revocation.Event{}
}

// untilHeartbeat reads events up to the next heartbeat and returns them and
// the heartbeat.
func (fs *feedStream) untilHeartbeat(t testing.TB) ([]revocation.Event, revocation.Event) {
	t.Helper()
	var evs []revocation.Event
	for {
		ev := fs.next(t)
		if ev.Heartbeat {
			return evs, ev
		}
		evs = append(evs, ev)
	}
}

// csrPEM makes a certificate request with no names for a fresh key.
func csrPEM(t testing.TB) string {
	t.Helper()
	k, err := pki.GenerateKey(pki.KeyECDSAP256, nil)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pki.EncodeCSR(der))
}

func writeRaw(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
