package keyrelease_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/auditlog"
	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/keyrelease"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testwait"
	"github.com/mutual-tls/mutual/internal/translog"
	"github.com/mutual-tls/mutual/seal"
)

// env is a real CA service on 127.0.0.1, and a key-release service beside
// it that follows the CA's revocation feed.
type env struct {
	ca      *testca.CA
	caURL   string
	admin   *client.Client
	keysID  *identity.Identity
	keysSrc *identity.DirSource
	watcher *revocation.Watcher
	keys    keyrelease.FileKeys
	signer  *translog.Signer
	audit   *auditlog.Log
	url     string

	mu     sync.Mutex
	offset time.Duration // the key service's clock runs this far ahead
}

func (e *env) now() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return time.Now().Add(e.offset)
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	e.offset += d
	e.mu.Unlock()
}

// newEnv starts the CA, the watcher (waiting for its feed) and the key
// service.
func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{ca: testca.New(t)}
	e.startCA(t)
	e.keysID = e.enrollWith(t, api.TokenRequest{SPIFFEID: "spiffe://example.org/mutual-keys", IPAddresses: []string{"127.0.0.1"}})
	e.keysSrc = dirSource(t, e.keysID)
	ctx, cancel := context.WithCancel(context.Background())
	e.watcher = &revocation.Watcher{CAURLs: []string{e.caURL}, Source: e.keysSrc, Log: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
	done := make(chan struct{})
	go func() { defer close(done); e.watcher.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "the revocation feed", e.watcher.FeedUp)

	e.keys = keyrelease.FileKeys{Dir: filepath.Join(t.TempDir(), "keys"), Passphrase: []byte("kek passphrase"), Iterations: 1000, Bits: 2048}
	var err error
	if e.signer, err = e.keys.AuditSigner("example.org"); err != nil {
		t.Fatal(err)
	}
	if e.audit, err = auditlog.Open(filepath.Join(t.TempDir(), "audit"), e.signer); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.audit.Close() })
	e.url = e.startKeys(t, e.watcher)
	return e
}

func (e *env) startCA(t testing.TB) {
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := caservice.Open(ctx, caservice.Options{Dir: e.ca.Dir, Passphrase: []byte(testca.Passphrase), Listen: "127.0.0.1:0"})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	adminID, err := identity.Load(e.ca.AdminDir)
	if err != nil {
		t.Fatal(err)
	}
	tc := adminID.TLSCertificate()
	if e.admin, err = client.New([]string{svc.URL}, adminID.Roots, &tc); err != nil {
		t.Fatal(err)
	}
	e.caURL = svc.URL
	t.Cleanup(func() {
		e.admin.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("CA service: %v", err)
		}
		svc.Close()
	})
}

// startKeys serves a key-release service with the key directory's current
// keys and the revocation checker rc, and returns its URL.
func (e *env) startKeys(t testing.TB, rc keyrelease.RevocationChecker) string {
	t.Helper()
	ring, err := e.keys.Load()
	if err != nil {
		t.Fatal(err)
	}
	return e.startRing(t, ring, rc)
}

// startRing serves a key-release service with ring and the revocation
// checker rc, and returns its URL.
func (e *env) startRing(t testing.TB, ring *keyrelease.Keyring, rc keyrelease.RevocationChecker) string {
	t.Helper()
	s, err := keyrelease.New(keyrelease.Config{Keys: ring, Bundle: e.keysSrc, Revocation: rc, Audit: e.audit, Now: e.now})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s.Handler(), TLSConfig: s.TLSConfig(e.keysSrc), ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(testWriter{t}, "", 0)}
	done := make(chan struct{})
	go func() { defer close(done); srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { srv.Close(); <-done })
	return "https://" + ln.Addr().String()
}

// enroll obtains an identity from the CA with a join token, so that the
// CA knows it and can revoke it.
func (e *env) enroll(t testing.TB, id string, roles ...string) *identity.Identity {
	t.Helper()
	return e.enrollWith(t, api.TokenRequest{SPIFFEID: id, Roles: roles})
}

func (e *env) enrollWith(t testing.TB, req api.TokenRequest) *identity.Identity {
	t.Helper()
	tok, err := e.admin.CreateToken(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	enr, err := client.RequestIdentity(context.Background(), tok.Token, pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	return enr.Identity
}

// client is a key service client with id's identity.
func (e *env) client(t testing.TB, id *identity.Identity) *keyrelease.Client {
	return e.clientOf(t, e.url, id)
}

func (e *env) clientOf(t testing.TB, url string, id *identity.Identity) *keyrelease.Client {
	t.Helper()
	src := dirSource(t, id)
	c, err := keyrelease.NewClient(url, src, src, keyrelease.DefaultServerID(e.ca.TrustDomain))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func dirSource(t testing.TB, id *identity.Identity) *identity.DirSource {
	t.Helper()
	dir := t.TempDir()
	if err := id.Save(dir); err != nil {
		t.Fatal(err)
	}
	src, err := identity.NewDirSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// records returns the audit log's records.
func (e *env) records(t testing.TB) []keyrelease.Record {
	t.Helper()
	var out []keyrelease.Record
	for i := range e.audit.Size() {
		b, err := e.audit.Record(i)
		if err != nil {
			t.Fatal(err)
		}
		var r keyrelease.Record
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// lastRecord is the newest audit record.
func (e *env) lastRecord(t testing.TB) keyrelease.Record {
	t.Helper()
	rs := e.records(t)
	if len(rs) == 0 {
		t.Fatal("the audit log is empty")
	}
	return rs[len(rs)-1]
}

func sealTo(t testing.TB, c seal.Wrapper, p seal.Policy, plain []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := seal.Seal(context.Background(), &out, bytes.NewReader(plain), p, c); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func unseal(c seal.Unwrapper, sealed []byte) ([]byte, error) {
	var out bytes.Buffer
	err := seal.Unseal(context.Background(), &out, bytes.NewReader(sealed), c)
	return out.Bytes(), err
}

// waitFor waits for cond (testwait's deadline).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testwait.Eventually(t, cond, what)
}

// plainTLS is a TLS client trusting the CA's root and checking the key
// service's IP SAN, presenting certs (none for an anonymous caller).
func (e *env) plainTLS(certs ...tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: pki.CertPool([]*x509.Certificate{e.ca.Root}), ServerName: "127.0.0.1", Certificates: certs, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func checkRecord(p tlog.RecordProof, cp *translog.Checkpoint, i int64, rec []byte) error {
	return tlog.CheckRecord(p, cp.Size, cp.Hash, i, tlog.RecordHash(rec))
}
