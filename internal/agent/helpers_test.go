package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/agent"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
)

const td = "spiffe://example.org"

// logBuf collects a component's log; it is shown only when the test fails,
// so that goroutines still logging after the test cannot panic the run.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Keep the tail: a rotation loop can be chatty.
	if l.buf.Len() > 1<<20 {
		rest := l.buf.Bytes()[l.buf.Len()-(256<<10):]
		l.buf = *bytes.NewBuffer(append([]byte("[...]\n"), rest...))
	}
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newLog(t testing.TB, name string) *slog.Logger {
	l, _ := newLogBuf(t, name)
	return l
}

// newLogBuf is newLog that also returns the buffer, for tests that read it.
func newLogBuf(t testing.TB, name string) (*slog.Logger, *logBuf) {
	lb := &logBuf{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", name, lb.String())
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// caEnv is a real CA service (caservice.Open + Run, SQLite store in the CA
// directory) on loopback that can be stopped and started again on the same
// address and store, and its operator.
type caEnv struct {
	t     testing.TB
	ca    *testca.CA
	addr  string
	url   string
	admin *client.Client
	log   *slog.Logger

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan error
	svc    *caservice.Service
}

func startCA(t testing.TB) *caEnv {
	t.Helper()
	e := &caEnv{t: t, ca: testca.New(t), addr: "127.0.0.1:0", log: newLog(t, "CA")}
	e.start()
	t.Cleanup(e.stop)
	adminID, err := identity.Load(e.ca.AdminDir)
	if err != nil {
		t.Fatal(err)
	}
	tc := adminID.TLSCertificate()
	e.admin, err = client.New([]string{e.url}, adminID.Roots, &tc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.admin.CloseIdleConnections)
	return e
}

// start runs the service; after the first start, on the same address.
func (e *caEnv) start() {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.svc != nil {
		e.t.Fatal("CA already running")
	}
	ctx, cancel := context.WithCancel(context.Background())
	var svc *caservice.Service
	var err error
	// The port was just released; give the kernel a moment if needed.
	for i := 0; i < 50; i++ {
		svc, err = caservice.Open(ctx, caservice.Options{Dir: e.ca.Dir, Passphrase: []byte(testca.Passphrase), Listen: e.addr, Log: e.log})
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		cancel()
		e.t.Fatalf("start the CA service: %v", err)
	}
	e.addr = svc.Addr().String()
	if e.url != "" && svc.URL != e.url {
		e.t.Fatalf("the CA came back at %s, not %s", svc.URL, e.url)
	}
	e.url = svc.URL
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	e.svc, e.cancel, e.done = svc, cancel, done
}

// stop shuts the service down and releases its listener and store.
func (e *caEnv) stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.svc == nil {
		return
	}
	e.cancel()
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("the CA service's Run returned an error at shutdown: %v", err)
		}
	case <-time.After(30 * time.Second):
		e.t.Errorf("the CA service did not stop within 30s")
	}
	e.svc.Close()
	e.svc = nil
}

func (e *caEnv) token(t testing.TB, id string) string {
	t.Helper()
	resp, err := e.admin.CreateToken(context.Background(), api.TokenRequest{SPIFFEID: id})
	if err != nil {
		t.Fatalf("token for %s: %v", id, err)
	}
	return resp.Token
}

// entry registers id for workloads on node matching selectors.
func (e *caEnv) entry(t testing.TB, id, node string, ttl time.Duration, dns []string, selectors ...string) *api.Entry {
	t.Helper()
	en, err := e.admin.CreateEntry(context.Background(), api.EntryRequest{SPIFFEID: id, Nodes: []string{node}, Selectors: selectors, CertTTL: api.Duration(ttl), DNSNames: dns})
	if err != nil {
		t.Fatalf("entry %s: %v", id, err)
	}
	return en
}

// shortDir makes a directory with a short path (Unix socket paths are
// limited to 108 bytes), traversable by every user.
func shortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "ag")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// runningAgent is an agent made with agent.New and run in this process.
type runningAgent struct {
	a      *agent.Agent
	sock   string
	dir    string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func newAgent(t testing.TB, cfg agent.Config) (*agent.Agent, error) {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = newLog(t, "agent "+filepath.Base(cfg.StateDir))
	}
	if cfg.SyncInterval == 0 {
		cfg.SyncInterval = time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return agent.New(ctx, cfg)
}

// runAgent starts an agent and stops it at the end of the test.
func runAgent(t testing.TB, cfg agent.Config) *runningAgent {
	t.Helper()
	a, err := newAgent(t, cfg)
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningAgent{a: a, sock: cfg.Socket, dir: cfg.StateDir, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *runningAgent) stop(t testing.TB) {
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("agent Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("the agent did not stop within 30s")
		}
		r.a.Close()
	})
}

// nodeAgent enrolls a node named name with the CA and runs its agent with a
// socket in a fresh short directory; mod, if not nil, changes the config.
func nodeAgent(t testing.TB, e *caEnv, name string, mod func(*agent.Config)) *runningAgent {
	t.Helper()
	base := shortDir(t)
	cfg := agent.Config{
		StateDir: filepath.Join(base, "state"),
		Token:    e.token(t, td+"/node/"+name),
		Socket:   filepath.Join(base, "agent.sock"),
	}
	if mod != nil {
		mod(&cfg)
	}
	return runAgent(t, cfg)
}

func addr(sock string) workloadapi.ClientOption { return workloadapi.WithAddr("unix://" + sock) }

// source opens a go-spiffe X509Source on the socket whose default SVID is
// want (the process may match several entries).
func source(t testing.TB, sock, want string) *workloadapi.X509Source {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx,
		workloadapi.WithClientOptions(addr(sock)),
		workloadapi.WithDefaultX509SVIDPicker(func(svids []*x509svid.SVID) *x509svid.SVID {
			for _, s := range svids {
				if s.ID.String() == want {
					return s
				}
			}
			return svids[0]
		}))
	if err != nil {
		t.Fatalf("go-spiffe X509Source on %s: %v", sock, err)
	}
	t.Cleanup(func() { src.Close() })
	// The picker falls back to the first SVID: wait for the one wanted.
	eventually(t, 45*time.Second, "an SVID for "+want, func() error {
		s, err := src.GetX509SVID()
		if err != nil {
			return err
		}
		if s.ID.String() != want {
			return fmt.Errorf("got %s", s.ID)
		}
		return nil
	})
	return src
}

// eventually polls f until it succeeds or the deadline passes.
func eventually(t testing.TB, limit time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s: %v", limit, what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func serialOf(c *x509.Certificate) string { return pki.FormatSerial(c.SerialNumber) }

// wantAPIError checks the CA's status and code.
func wantAPIError(t testing.TB, what string, err error, status int, code string) {
	t.Helper()
	var ae *client.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("%s: want HTTP %d %s, got %v", what, status, code, err)
	}
	if ae.Status != status || ae.Code != code {
		t.Fatalf("%s: want HTTP %d %s, got HTTP %d %s (%s)", what, status, code, ae.Status, ae.Code, ae.Message)
	}
}

// buildTestWorkload builds internal/testworkload into dir/name (mode 0755),
// with variant baked in so that variants differ in their hash.
func buildTestWorkload(t testing.TB, dir, name, variant string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, "-ldflags", "-X main.variant="+variant, "github.com/mutual-tls/mutual/internal/agent/internal/testworkload")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build testworkload: %v\n%s", err, b)
	}
	if err := os.Chmod(out, 0o755); err != nil {
		t.Fatal(err)
	}
	return out
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// csrPEM makes a key and a PEM CSR for hand-made node requests; uris
// become URI SANs (a node asking for an identity by name).
func csrPEM(t testing.TB, uris ...string) string {
	t.Helper()
	key, err := pki.GenerateKey(pki.KeyECDSAP256, nil)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pki.EncodeCSR(der))
}
