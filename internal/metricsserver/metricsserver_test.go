package metricsserver_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mutual-tls/mutual/internal/metricsserver"
)

// TestRunServesUntilCancelled: /metrics and the extra pages answer while
// Run runs; Run returns nil once ctx is done and the port is released.
func TestRunServesUntilCancelled(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "mutual_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Inc()
	s, err := metricsserver.Listen("127.0.0.1:0", reg, map[string]http.Handler{
		"/extra": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "extra page") }),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	get := func(path string) (string, error) {
		resp, err := http.Get("http://" + s.Addr() + path)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	body, err := get("/metrics")
	if err != nil || !strings.Contains(body, "mutual_test_total 1") || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("/metrics: %v\n%s", err, body)
	}
	if body, err := get("/extra"); err != nil || body != "extra page" {
		t.Fatalf("/extra: %q, %v", body, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := get("/metrics"); err == nil {
		t.Fatal("still serving after Run returned")
	}
}

// TestListenNamesTheFlag: a bad address is an error about --metrics.
func TestListenNamesTheFlag(t *testing.T) {
	_, err := metricsserver.Listen("256.0.0.1:bad", prometheus.NewRegistry(), nil)
	if err == nil || !strings.HasPrefix(err.Error(), "--metrics: ") {
		t.Fatalf("err = %v, want one naming --metrics", err)
	}
}
