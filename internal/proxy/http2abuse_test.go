package proxy_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/mutual-tls/mutual/internal/h2guard"
	"github.com/mutual-tls/mutual/internal/h2guard/h2attack"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// blockingBackend answers /ok at once and holds every other request until
// the proxy gives up on it or the test ends, counting requests: in total
// and at once.
type blockingBackend struct {
	addr             string
	total, now, peak atomic.Int64
	release          chan struct{}
}

func newBlockingBackend(t *testing.T) *blockingBackend {
	b := &blockingBackend{release: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ok" {
			return
		}
		b.total.Add(1)
		n := b.now.Add(1)
		defer b.now.Add(-1)
		for {
			p := b.peak.Load()
			if n <= p || b.peak.CompareAndSwap(p, n) {
				break
			}
		}
		// An HTTP/1 server only sees its client go once the body is read.
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
		case <-b.release:
		}
	}))
	t.Cleanup(func() {
		close(b.release)
		srv.Close()
	})
	b.addr = srv.Listener.Addr().String()
	return b
}

func dialAttack(t *testing.T, addr string, w *world) *h2attack.Client {
	t.Helper()
	h, err := h2attack.Dial(addr, w.clientTLS(w.ca.Leaf(t, webID)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	if h.Settle() {
		t.Fatalf("the proxy ended the connection at once: %v", h.Err())
	}
	return h
}

func requestLogs(r *proxyRun) int {
	n := 0
	for _, l := range r.logs.Records() {
		if l["msg"] == "request" {
			n++
		}
	}
	return n
}

// TestInboundHTTP2RapidReset: CVE-2023-44487. An authorized client opens
// streams and cancels each at once, 20,000 in a row, on one connection. Go
// bounds the handlers running at once, but not how many a client starts:
// unguarded, the proxy ran 15,830 handlers and sent 3,257 requests to the
// service for one connection. The connection must be closed after a bounded
// number, with a log line saying why, and the proxy go on serving others.
func TestInboundHTTP2RapidReset(t *testing.T) {
	w := newWorld(t)
	be := newBlockingBackend(t)
	r := runInbound(t, w, proxy.InboundConfig{Target: be.addr, Protocol: proxy.HTTP})
	h := dialAttack(t, r.addr, w)
	const streams = 20000
	sent, closed := h.RapidReset("GET", "/rapid", streams)
	t.Logf("sent %d HEADERS+RST_STREAM pairs; closed: %v (%v, GOAWAY %v); the backend saw %d requests, at most %d at once; the proxy ran %d handlers",
		sent, closed, h.Err(), h.GoAway(), be.total.Load(), be.peak.Load(), requestLogs(r))
	if !closed {
		t.Errorf("the proxy took %d cancelled streams on one connection without closing it", sent)
	}
	// Each started handler may cost the service a request: at most the
	// cancellations allowed (twice: the ratio) and the streams in flight.
	bound := 2*(h2guard.MaxCancelledStreams+1) + h2guard.MaxConcurrentStreams
	if n := be.total.Load(); n > int64(bound) {
		t.Errorf("%d of %d cancelled streams reached the backend; want at most %d", n, sent, bound)
	}
	if peak := be.peak.Load(); peak > h2guard.MaxConcurrentStreams {
		t.Errorf("the backend had %d requests in flight for one connection; the limit is %d", peak, h2guard.MaxConcurrentStreams)
	}
	if n := requestLogs(r); n > bound {
		t.Errorf("the proxy ran its handler for %d of %d cancelled streams; want at most %d", n, sent, bound)
	}
	if !r.logs.Has("connection closed", map[string]any{"reason": "rapid reset: the client cancelled most of its HTTP/2 requests"}) {
		t.Errorf("no log line says why the connection was closed:\n%s", r.logs)
	}
	res := getOnce(w.clientTLS(w.ca.Leaf(t, webID)), "https://"+r.addr+"/ok")
	if res.err != nil || res.code != http.StatusOK {
		t.Errorf("after the flood a new client got %d, %v", res.code, res.err)
	}
}

// TestInboundHTTP2StreamFlood: a client opens far more streams than the
// proxy allows and leaves them idle (request bodies never sent). The
// service sees at most MaxConcurrentStreams requests from it, the rest are
// refused, and everything is released when the client goes.
func TestInboundHTTP2StreamFlood(t *testing.T) {
	w := newWorld(t)
	be := newBlockingBackend(t)
	r := runInbound(t, w, proxy.InboundConfig{Target: be.addr, Protocol: proxy.HTTP})
	before := runtime.NumGoroutine()
	h := dialAttack(t, r.addr, w)
	const extra = 200
	for i := 0; i < h2guard.MaxConcurrentStreams+extra; i++ {
		if _, err := h.Open("POST", "/idle", false); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	if h.Settle() {
		t.Fatalf("the proxy closed the connection: %v", h.Err())
	}
	testwait.Eventually(t, func() bool { return be.now.Load() == h2guard.MaxConcurrentStreams }, "the backend holds the allowed streams")
	if got := h.Refusals.Load(); got != extra {
		t.Errorf("the proxy refused %d streams; want the %d past its limit", got, extra)
	}
	during := runtime.NumGoroutine()
	h.Close()
	testwait.Eventually(t, func() bool { return be.now.Load() == 0 }, "the backend's requests end with the client")
	testwait.Eventually(t, func() bool {
		return metricValue(t, r.reg, "mutual_proxy_active_connections", nil) == 0
	}, "the proxy's connection count back to zero")
	if peak := be.peak.Load(); peak > h2guard.MaxConcurrentStreams {
		t.Errorf("the backend had %d requests at once from one connection; the limit is %d", peak, h2guard.MaxConcurrentStreams)
	}
	// Goroutines (handlers, relays to the backend) go back to what they were.
	testwait.Eventually(t, func() bool { return runtime.NumGoroutine() <= before+10 }, "goroutines released")
	t.Logf("goroutines: %d before, %d with %d open streams, %d after", before, during, h2guard.MaxConcurrentStreams, runtime.NumGoroutine())
}

// TestInboundHTTP2ContinuationFlood: CVE-2024-27316 and kin. A client
// sends HEADERS without END_HEADERS and then CONTINUATION frames without
// end. The proxy must close the connection once the header block passes
// MaxHeaderBytes, without running a handler, rather than read on.
func TestInboundHTTP2ContinuationFlood(t *testing.T) {
	w := newWorld(t)
	be := newCountingBackend(t)
	r := runInbound(t, w, proxy.InboundConfig{Target: be.addr, Protocol: proxy.HTTP})
	h := dialAttack(t, r.addr, w)
	closed, sent := h.ContinuationFlood("/flood", 64<<20)
	t.Logf("sent %d bytes of one header block; closed: %v (%v, GOAWAY %v)", sent, closed, h.Err(), h.GoAway())
	if !closed {
		t.Fatalf("the proxy read %d bytes of one header block and kept the connection", sent)
	}
	if got := be.requests(); len(got) != 0 {
		t.Errorf("the backend received %q", got)
	}
	if n := requestLogs(r); n != 0 {
		t.Errorf("the proxy ran %d handlers", n)
	}
}
