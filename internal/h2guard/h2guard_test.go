package h2guard_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/mutual-tls/mutual/internal/h2guard"
	"github.com/mutual-tls/mutual/internal/h2guard/h2attack"
)

// guarded starts an HTTPS server configured by h2guard: /fast answers at
// once, /slow signals started and waits for its client to cancel.
func guarded(t *testing.T) (*h2attack.Client, chan struct{}) {
	t.Helper()
	started := make(chan struct{}, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-r.Context().Done()
		}
	}))
	srv.EnableHTTP2 = true
	h2guard.Configure(srv.Config, h2guard.Options{})
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	h, err := h2attack.Dial(srv.Listener.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "example.com"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h, started
}

// cancelRunning starts n slow requests one after the other and cancels each
// once its handler runs.
func cancelRunning(t *testing.T, h *h2attack.Client, started chan struct{}, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		id, err := h.Open("GET", "/slow", true)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		select {
		case <-started:
		case <-h.Done():
			t.Fatalf("request %d: the server ended the connection: %v", i, h.Err())
		}
		if err := h.Reset(id); err != nil {
			t.Fatal(err)
		}
	}
}

// TestGuardKeepsClientsThatCancelSome: a client that cancels requests now
// and then (a browser leaving a page, a gRPC deadline) keeps its connection,
// even past MaxCancelledStreams, while most of its requests complete.
func TestGuardKeepsClientsThatCancelSome(t *testing.T) {
	h, started := guarded(t)
	for i := 0; i < 2*h2guard.MaxCancelledStreams+10; i++ {
		if s, err := h.Get("/fast"); err != nil || s != "200" {
			t.Fatalf("GET /fast = %q, %v", s, err)
		}
	}
	cancelRunning(t, h, started, h2guard.MaxCancelledStreams+5)
	if h.Settle() {
		t.Fatalf("the guard closed a connection with %d cancelled of %d requests: %v",
			h2guard.MaxCancelledStreams+5, 3*h2guard.MaxCancelledStreams+15, h.Err())
	}
	if s, err := h.Get("/fast"); err != nil || s != "200" {
		t.Fatalf("GET /fast = %q, %v", s, err)
	}
}

// TestGuardClosesRapidReset: a client that cancels more than
// MaxCancelledStreams running requests, and most of what it sends, loses
// its connection; one cancellation fewer does not.
func TestGuardClosesRapidReset(t *testing.T) {
	h, started := guarded(t)
	cancelRunning(t, h, started, h2guard.MaxCancelledStreams)
	if h.Settle() {
		t.Fatalf("the guard closed the connection at %d cancellations: %v", h2guard.MaxCancelledStreams, h.Err())
	}
	cancelRunning(t, h, started, 1)
	<-h.Done() // the server closed the connection
}
