package metricsserver_test

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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

// TestHealth: /livez is 200 whatever the state; /readyz follows ready, with
// the reason in a 503, and the extra pages stay.
func TestHealth(t *testing.T) {
	var notReady atomic.Bool
	notReady.Store(true)
	pages := metricsserver.Health(func() error {
		if notReady.Load() {
			return errors.New("no identity yet:\nwaiting")
		}
		return nil
	}, map[string]http.Handler{
		"/migration": http.NotFoundHandler(),
	})
	s, err := metricsserver.Listen("127.0.0.1:0", prometheus.NewRegistry(), pages)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + s.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/livez"); code != 200 || body != "ok\n" {
		t.Errorf("/livez not ready: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 503 || body != "not ready: no identity yet: waiting\n" {
		t.Errorf("/readyz not ready: %d %q", code, body)
	}
	notReady.Store(false)
	if code, body := get("/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz ready: %d %q", code, body)
	}
	if code, _ := get("/livez"); code != 200 {
		t.Errorf("/livez ready: %d", code)
	}
	if code, _ := get("/migration"); code != 404 {
		t.Errorf("the extra page is gone: %d", code)
	}
}

// TestCertificateExpiry: the gauge follows the certificate at each scrape
// and has no sample while there is none.
func TestCertificateExpiry(t *testing.T) {
	var cur atomic.Pointer[x509.Certificate]
	reg := prometheus.NewRegistry()
	reg.MustRegister(metricsserver.CertificateExpiry("mutual_test_expiry_timestamp_seconds", "test", cur.Load))
	value := func() (float64, bool) {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "mutual_test_expiry_timestamp_seconds" && len(mf.GetMetric()) == 1 {
				return mf.GetMetric()[0].GetGauge().GetValue(), true
			}
		}
		return 0, false
	}
	if v, ok := value(); ok {
		t.Errorf("a sample (%v) with no certificate", v)
	}
	for _, notAfter := range []time.Time{time.Unix(1700000000, 0), time.Unix(1800000000, 0)} {
		cur.Store(&x509.Certificate{NotAfter: notAfter})
		if v, ok := value(); !ok || v != float64(notAfter.Unix()) {
			t.Errorf("expiry = %v (%v), want %d", v, ok, notAfter.Unix())
		}
	}
}
