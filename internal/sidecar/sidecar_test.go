package sidecar_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/sidecar"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testport"
	"github.com/mutual-tls/mutual/internal/testwait"
	"github.com/mutual-tls/mutual/tlsconfig"
)

const (
	apiID = "spiffe://example.org/ns/prod/api"
	webID = "spiffe://example.org/ns/prod/web"
)

// record returns the first log record with msg, or nil.
func record(logs *testlog.Buffer, msg string) map[string]any {
	for _, r := range logs.Records() {
		if r["msg"] == msg {
			return r
		}
	}
	return nil
}

// waitRecord returns the first log record with msg once it is logged,
// failing t if Run returns first.
func waitRecord(t *testing.T, logs *testlog.Buffer, msg string, done <-chan error) map[string]any {
	t.Helper()
	var m map[string]any
	testwait.Eventually(t, func() bool {
		select {
		case err := <-done:
			t.Fatalf("Run returned %v before logging %q", err, msg)
		default:
		}
		m = record(logs, msg)
		return m != nil
	}, fmt.Sprintf("%q logged", msg))
	return m
}

// TestInboundRunsAndStopsEverything: the sidecar serves an allowed caller,
// follows its identity directory, serves /metrics and /migration, and once
// ctx is done returns nil with every part stopped (the metrics listener
// closed, "proxy stopped" said).
func TestInboundRunsAndStopsEverything(t *testing.T) {
	ca := testca.New(t)
	dir := t.TempDir()
	if err := ca.Leaf(t, apiID, testca.DNS("localhost")).Save(dir); err != nil {
		t.Fatal(err)
	}
	cfg, logs := inboundConfig(t, dir, webID)
	cfg.Metrics = "127.0.0.1:0"
	listen := cfg.Listen
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- sidecar.Run(ctx, cfg) }()
	listening := waitRecord(t, logs, "proxy listening", done)
	metricsURL, _ := listening["metrics"].(string)
	if !strings.HasPrefix(metricsURL, "http://127.0.0.1:") {
		t.Fatalf("proxy listening names metrics %q", metricsURL)
	}

	// An allowed caller gets through to the service.
	web, err := identity.NewDirSource(saveLeaf(t, ca, webID))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tlsconfig.ClientConfig(web, web, tlsconfig.AuthorizeAny(), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := testnet.RoundTrip(listen, tc, "ping"); err != nil || got != "ping" {
		t.Fatalf("echo through the proxy: %q, %v", got, err)
	}
	base := strings.TrimSuffix(metricsURL, "/metrics")
	// Ready: a valid certificate, and revocation off by the operator's choice.
	for _, u := range []string{metricsURL, base + "/migration", base + "/livez", base + "/readyz"} {
		if code := get(t, u); code != http.StatusOK {
			t.Fatalf("GET %s: %d", u, code)
		}
	}

	// The identity directory is followed.
	next := ca.Leaf(t, apiID, testca.DNS("localhost"))
	if err := next.Save(dir); err != nil {
		t.Fatal(err)
	}
	waitRecord(t, logs, "identity reloaded", done)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return 30 s after its context was cancelled")
	}
	if record(logs, "proxy stopped") == nil {
		t.Error("no \"proxy stopped\" logged")
	}
	if _, err := http.Get(metricsURL); err == nil {
		t.Error("the metrics listener still answers after Run returned")
	}
}

// inboundConfig is a strict TCP inbound sidecar on a free loopback port in
// front of an echo service, its identity from dir, allowing patterns,
// without revocation checks; its log is returned for waitRecord.
func inboundConfig(t *testing.T, dir string, patterns ...string) (sidecar.Config, *testlog.Buffer) {
	t.Helper()
	allow, err := authz.FromPatterns(patterns)
	if err != nil {
		t.Fatal(err)
	}
	log, logs := testlog.NewJSON(t, "sidecar")
	return sidecar.Config{
		Source:     sidecar.Source{IdentityDir: dir},
		Revocation: sidecar.Revocation{Off: true},
		Listen:     testport.Addr(t),
		Log:        log,
		Inbound:    &sidecar.Inbound{Target: testnet.Echo(t), Allow: allow, Mode: proxy.Strict, Protocol: proxy.TCP},
	}, logs
}

func saveLeaf(t *testing.T, ca *testca.CA, id string) string {
	dir := t.TempDir()
	if err := ca.Leaf(t, id).Save(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func get(t *testing.T, u string) int {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestRunRefusesBadConfig: errors name what is wrong before anything runs.
func TestRunRefusesBadConfig(t *testing.T) {
	ca := testca.New(t)
	dir := saveLeaf(t, ca, apiID)
	busy := testnet.Listen(t)
	expect, err := authz.ParsePattern(webID)
	if err != nil {
		t.Fatal(err)
	}
	out := &sidecar.Outbound{Target: "127.0.0.1:1", Expect: []authz.Pattern{expect}}
	for _, c := range []struct {
		name string
		cfg  sidecar.Config
		want string
	}{
		{"no direction", sidecar.Config{}, "exactly one of Inbound and Outbound"},
		{"no source", sidecar.Config{Outbound: out}, "--identity-dir: required"},
		{"two sources", sidecar.Config{Outbound: out, Source: sidecar.Source{IdentityDir: dir, WorkloadAPI: "unix:///x"}}, "not both"},
		{"no revocation source", sidecar.Config{Outbound: out, Source: sidecar.Source{IdentityDir: dir}}, "--ca: no revocation source"},
		{"--ca and --no-revocation", sidecar.Config{Outbound: out, Source: sidecar.Source{IdentityDir: dir}, Revocation: sidecar.Revocation{Off: true, CAURLs: []string{"https://ca"}}}, "--no-revocation: give --ca or --no-revocation"},
		{"listen busy", sidecar.Config{Outbound: out, Source: sidecar.Source{IdentityDir: dir}, Revocation: sidecar.Revocation{Off: true}, Listen: busy.Addr().String()}, "--listen: "},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := sidecar.Run(context.Background(), c.cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
}
