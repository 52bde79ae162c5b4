package agent_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/agent"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testport"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// runProcess runs the agent as `mutual agent` does (agent.Run) and returns
// a function that stops it and waits.
func runProcess(t *testing.T, cfg agent.Config) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, cfg) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent.Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("agent.Run did not return 30 s after cancel")
		}
	}
	t.Cleanup(stop)
	return stop
}

// readyz answers GET /readyz (and checks that /livez is 200 meanwhile).
func readyz(t *testing.T, metrics string) (int, string) {
	t.Helper()
	var code int
	var body string
	for _, path := range []string{"/livez", "/readyz"} {
		resp, err := http.Get("http://" + metrics + path)
		if err != nil {
			return 0, err.Error() // not listening yet
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if path == "/livez" && resp.StatusCode != http.StatusOK {
			t.Errorf("/livez: %d %q", resp.StatusCode, b)
		}
		code, body = resp.StatusCode, string(b)
	}
	return code, body
}

// TestHealth: the agent's /readyz is 200 once enrolled and following the
// CA's revocation feed; restarted from its state while the CA is down it
// is alive but not ready and says the CA is unreachable; ready again once
// the CA is back.
func TestHealth(t *testing.T) {
	e := testenv.StartCA(t, testenv.Options{})
	base := shortDir(t)
	logger, _ := testlog.New(t, "agent health")
	cfg := agent.Config{
		StateDir: filepath.Join(base, "state"), Token: e.Token(t, td+"/node/health", api.TokenRequest{}),
		Socket: filepath.Join(base, "agent.sock"), SyncInterval: time.Second,
		Log: logger, Metrics: testport.Addr(t),
	}
	ready := func(want int, says string) {
		t.Helper()
		testwait.EventuallyNil(t, func() error {
			code, body := readyz(t, cfg.Metrics)
			if code != want || !strings.Contains(body, says) {
				return fmt.Errorf("/readyz: %d %q", code, body)
			}
			return nil
		}, fmt.Sprintf("/readyz %d %q", want, says))
	}
	stop := runProcess(t, cfg)
	ready(http.StatusOK, "ready")
	stop()

	e.Stop(t)
	cfg.Token = "" // enrolled: the state directory is enough
	cfg.Registry = nil
	stop = runProcess(t, cfg)
	ready(http.StatusServiceUnavailable, "is the CA reachable?")

	e.Start(t)
	ready(http.StatusOK, "ready")
	stop()
}
