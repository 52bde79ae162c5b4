package server_test

import (
	"crypto/tls"
	"net/http"
	"net/url"
	"runtime"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mutual-tls/mutual/internal/h2guard"
	"github.com/mutual-tls/mutual/internal/h2guard/h2attack"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// attackCA starts a CA and opens an anonymous HTTP/2 connection to its API,
// as anyone who can reach it can (enrollment needs no certificate).
func attackCA(t *testing.T) (*env, *h2attack.Client, string) {
	t.Helper()
	e := start(t, testca.New(t), "")
	u, err := url.Parse(e.URL)
	if err != nil {
		t.Fatal(err)
	}
	h, err := h2attack.Dial(u.Host, &tls.Config{RootCAs: rootPool(e.CA.CA)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	if h.Settle() {
		t.Fatalf("the CA ended the connection at once: %v", h.Err())
	}
	return e, h, u.Host
}

// handled is how many requests the CA's handlers have run for route.
func handled(t *testing.T, e *env, route string) int {
	t.Helper()
	resp, err := http.Get(e.MetricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	n := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "mutual_ca_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelIs(m, "route", route) {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return int(n)
}

func labelIs(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// TestServerHTTP2RapidReset: CVE-2023-44487 against the CA. An anonymous
// client starts enrollments and cancels each while the handler waits for
// its body, 20,000 in a row on one connection. The CA must close the
// connection after a bounded number of handlers.
func TestServerHTTP2RapidReset(t *testing.T) {
	e, h, _ := attackCA(t)
	const streams = 20000
	sent, closed := h.RapidReset("POST", "/v1/enroll", streams)
	ran := handled(t, e, "enroll")
	t.Logf("sent %d HEADERS+RST_STREAM pairs; closed: %v (%v, GOAWAY %v); the CA ran %d enroll handlers", sent, closed, h.Err(), h.GoAway(), ran)
	if !closed {
		t.Errorf("the CA took %d cancelled streams on one connection without closing it", sent)
	}
	if bound := 2*(h2guard.MaxCancelledStreams+1) + h2guard.MaxConcurrentStreams; ran > bound {
		t.Errorf("the CA ran %d handlers for %d cancelled streams; want at most %d", ran, sent, bound)
	}
}

// TestServerHTTP2StreamFlood: a client opens more enrollments than the CA
// allows on one connection and never sends their bodies. Streams past the
// limit are refused, and the handlers go when the client does.
func TestServerHTTP2StreamFlood(t *testing.T) {
	before := runtime.NumGoroutine()
	_, h, _ := attackCA(t)
	const extra = 200
	for i := 0; i < h2guard.MaxConcurrentStreams+extra; i++ {
		if _, err := h.Open("POST", "/v1/enroll", false); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	if h.Settle() {
		t.Fatalf("the CA closed the connection: %v", h.Err())
	}
	testwait.Eventually(t, func() bool { return h.Refusals.Load() >= extra }, "the streams past the limit refused")
	if got := h.Refusals.Load(); got != extra {
		t.Errorf("the CA refused %d streams; want the %d past its limit", got, extra)
	}
	during := runtime.NumGoroutine()
	h.Close()
	// The CA's own goroutines (store, listeners) were started after before.
	testwait.Eventually(t, func() bool { return runtime.NumGoroutine() < during-h2guard.MaxConcurrentStreams }, "handler goroutines released")
	t.Logf("goroutines: %d before the CA, %d with %d open streams, %d after", before, during, h2guard.MaxConcurrentStreams, runtime.NumGoroutine())
}

// TestServerHTTP2ContinuationFlood: one header block that never ends. The
// CA must close the connection once it passes MaxHeaderBytes, and run no
// handler for it.
func TestServerHTTP2ContinuationFlood(t *testing.T) {
	e, h, _ := attackCA(t)
	closed, sent := h.ContinuationFlood("/v1/bundle", 64<<20)
	t.Logf("sent %d bytes of one header block; closed: %v (%v, GOAWAY %v)", sent, closed, h.Err(), h.GoAway())
	if !closed {
		t.Fatalf("the CA read %d bytes of one header block and kept the connection", sent)
	}
	if n := handled(t, e, "bundle"); n != 0 {
		t.Errorf("the CA ran %d bundle handlers", n)
	}
}
