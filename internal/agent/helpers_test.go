package agent_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/mutual-tls/mutual/internal/agent"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testwait"
)

const td = "spiffe://example.org"

// entry registers id for workloads on node matching selectors.
func entry(t testing.TB, e *testenv.CA, id, node string, ttl time.Duration, dns []string, selectors ...string) *api.Entry {
	t.Helper()
	en, err := e.Admin.CreateEntry(context.Background(), api.EntryRequest{SPIFFEID: id, Nodes: []string{node}, Selectors: selectors, CertTTL: api.Duration(ttl), DNSNames: dns})
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
		cfg.Log, _ = testlog.New(t, "agent "+filepath.Base(cfg.StateDir))
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
func nodeAgent(t testing.TB, e *testenv.CA, name string, mod func(*agent.Config)) *runningAgent {
	t.Helper()
	base := shortDir(t)
	cfg := agent.Config{
		StateDir: filepath.Join(base, "state"),
		Token:    e.Token(t, td+"/node/"+name, api.TokenRequest{}),
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
	testwait.EventuallyNil(t, func() error {
		s, err := src.GetX509SVID()
		if err != nil {
			return err
		}
		if s.ID.String() != want {
			return fmt.Errorf("got %s", s.ID)
		}
		return nil
	}, "an SVID for "+want)
	return src
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
