package proxy_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testlog"
)

// TestPolicyFileRunTicks drives the policy file's poll loop tick by tick:
// a change is applied, counted and logged once; a broken file is counted
// and logged, and the last good policy stays in force.
func TestPolicyFileRunTicks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFileAtomic(t, path, "rules:\n  - ids: [\""+webID+"\"]\n")
	reg := prometheus.NewRegistry()
	m := proxy.NewMetrics(reg, "inbound")
	logs := &testlog.Buffer{}
	pf, err := proxy.LoadPolicyFile(path, nil, slogJSON(logs), m)
	if err != nil {
		t.Fatal(err)
	}
	ticks := make(chan time.Time)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pf.RunTicks(ctx, ticks) }()
	poll := func() {
		ticks <- time.Time{}
		ticks <- time.Time{} // returns once the first tick's poll is over
	}
	reloads := func(result string) float64 {
		return metricValue(t, reg, "mutual_proxy_policy_reloads_total", map[string]string{"result": result})
	}

	writeFileAtomic(t, path, "rules:\n  - ids: [\""+webID+"\", \""+dbID+"\"]\n  - ids: [\""+dbID+"\"]\n")
	poll()
	if n := len(pf.Policy().Rules); n != 2 {
		t.Fatalf("%d rules after the reload, want 2", n)
	}
	if got := reloads("ok"); got != 1 {
		t.Fatalf("ok reloads = %v after one change polled twice, want 1", got)
	}
	if !strings.Contains(logs.String(), `"msg":"policy reloaded"`) {
		t.Fatalf("no reload logged: %s", logs.String())
	}

	writeFileAtomic(t, path, "rules: [")
	poll()
	if n := len(pf.Policy().Rules); n != 2 {
		t.Fatalf("%d rules after a broken file, want the last good 2", n)
	}
	if got := reloads("error"); got != 1 {
		t.Fatalf("failed reloads = %v after one broken file polled twice, want 1 (reported once)", got)
	}
	if !strings.Contains(logs.String(), "keeping the last good policy") {
		t.Fatalf("the broken file was not logged: %s", logs.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
