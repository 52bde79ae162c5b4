package sidecar_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/sidecar"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testport"
	"github.com/mutual-tls/mutual/tlsconfig"
)

const (
	apiID = "spiffe://example.org/ns/prod/api"
	webID = "spiffe://example.org/ns/prod/web"
)

// logBuffer collects JSON log lines written from several goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// find returns the first log line with msg, or nil.
func (l *logBuffer) find(msg string) map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range strings.Split(l.b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			return m
		}
	}
	return nil
}

// wait returns the first log line with msg, failing t after 15 s without.
func (l *logBuffer) wait(t *testing.T, msg string, done <-chan error) map[string]any {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if m := l.find(msg); m != nil {
			return m
		}
		select {
		case err := <-done:
			t.Fatalf("Run returned %v before logging %q", err, msg)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q logged within 15s:\n%s", msg, l.b.String())
		}
	}
}

// echoServer answers every connection by echoing it, until the test ends.
func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
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
	allow, err := authz.FromPatterns([]string{webID})
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	listen := testport.Addr(t)
	cfg := sidecar.Config{
		Source:     sidecar.Source{IdentityDir: dir},
		Revocation: sidecar.Revocation{Off: true},
		Listen:     listen, Metrics: "127.0.0.1:0",
		Log:     slog.New(slog.NewJSONHandler(logs, nil)),
		Inbound: &sidecar.Inbound{Target: echoServer(t), Allow: allow, Mode: proxy.Strict, Protocol: proxy.TCP},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- sidecar.Run(ctx, cfg) }()
	listening := logs.wait(t, "proxy listening", done)
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
	roundTrip(t, listen, tc)
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
	logs.wait(t, "identity reloaded", done)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return 30 s after its context was cancelled")
	}
	if logs.find("proxy stopped") == nil {
		t.Error("no \"proxy stopped\" logged")
	}
	if _, err := http.Get(metricsURL); err == nil {
		t.Error("the metrics listener still answers after Run returned")
	}
}

func saveLeaf(t *testing.T, ca *testca.CA, id string) string {
	dir := t.TempDir()
	if err := ca.Leaf(t, id).Save(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func roundTrip(t *testing.T, addr string, tc *tls.Config) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, tc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
		t.Fatalf("echo through the proxy: %q, %v", b, err)
	}
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
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
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
