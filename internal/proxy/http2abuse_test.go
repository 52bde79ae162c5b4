package proxy_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/mutual-tls/mutual/internal/proxy"
)

// blockingBackend answers /ok at once and holds every other request until the proxy gives up on it (its
// context ends) or the test ends, and counts requests: total and at once.
type blockingBackend struct {
	addr             string
	total, now, peak atomic.Int64
	release          chan struct{}
}

func newBlockingBackend(t *testing.T) *blockingBackend {
	b := &blockingBackend{release: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.total.Add(1)
		n := b.now.Add(1)
		defer b.now.Add(-1)
		for {
			p := b.peak.Load()
			if n <= p || b.peak.CompareAndSwap(p, n) {
				break
			}
		}
		if r.URL.Path == "/ok" {
			return
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

// h2Drain reads frames until the connection ends, answering SETTINGS, and
// reports what ended it. Stream resets from the server are counted.
type h2Drain struct {
	goAway   atomic.Pointer[http2.GoAwayFrame]
	resets   atomic.Int64
	refusals atomic.Int64  // RST_STREAM with REFUSED_STREAM or PROTOCOL_ERROR
	pingAck  chan struct{} // closed at the first PING acknowledgement
	done     chan struct{}
	err      error
}

func drainH2(h *h2Client) *h2Drain {
	d := &h2Drain{done: make(chan struct{}), pingAck: make(chan struct{})}
	go func() {
		defer close(d.done)
		acked := false
		for {
			f, err := h.fr.ReadFrame()
			if err != nil {
				d.err = err
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					h.mu.Lock()
					h.fr.WriteSettingsAck()
					h.mu.Unlock()
				}
			case *http2.PingFrame:
				if f.IsAck() && !acked {
					acked = true
					close(d.pingAck)
				}
			case *http2.GoAwayFrame:
				d.goAway.Store(f)
			case *http2.RSTStreamFrame:
				d.resets.Add(1)
				if f.ErrCode == http2.ErrCodeRefusedStream || f.ErrCode == http2.ErrCodeProtocol {
					d.refusals.Add(1)
				}
			}
		}
	}()
	return d
}

// TestInboundHTTP2RapidReset: CVE-2023-44487. An authorized client opens
// streams and cancels each at once, thousands in a row, on one connection.
// The proxy must not run a handler (and a request to the service) per
// cancelled stream without bound: at most MaxConcurrentStreams at once, and
// a connection that cancels far more requests than it completes is closed.
func TestInboundHTTP2RapidReset(t *testing.T) {
	w := newWorld(t)
	be := newBlockingBackend(t)
	r := runInbound(t, w, proxy.InboundConfig{Target: be.addr, Protocol: proxy.HTTP})
	h := dialH2(t, r.addr, w.clientTLS(w.ca.Leaf(t, webID)))
	defer h.Close()
	d := drainH2(h)
	const streams = 20000
	sent := 0
	var werr error
	for ; sent < streams; sent++ {
		id, err := h.open("/rapid", true)
		if err == nil {
			err = h.reset(id)
		}
		if err != nil {
			werr = err
			break
		}
	}
	closed := settle(h, d)
	ga := d.goAway.Load()
	t.Logf("sent %d HEADERS+RST_STREAM pairs (write error: %v); server GOAWAY: %v; read error: %v; backend saw %d requests, at most %d at once; proxy logged %d requests; closed: %v",
		sent, werr, ga, d.err, be.total.Load(), be.peak.Load(), len(requestLogs(r)), closed)
	if peak := be.peak.Load(); peak > proxy.HTTP2MaxConcurrentStreams {
		t.Errorf("the backend had %d requests in flight for one connection; the limit is %d", peak, proxy.HTTP2MaxConcurrentStreams)
	}
	if !closed {
		t.Errorf("the proxy took %d cancelled streams on one connection without closing it", streams)
	}
	// Each started handler may cost the service a request: at most the
	// cancellations allowed (twice: the ratio) and the streams in flight.
	bound := 2*proxy.HTTP2MaxCancelledStreams + proxy.HTTP2MaxConcurrentStreams
	if n := be.total.Load(); n > int64(bound) {
		t.Errorf("%d of %d cancelled streams reached the backend; want at most %d", n, sent, bound)
	}
	if n := len(requestLogs(r)); n > bound {
		t.Errorf("the proxy ran its handler for %d of %d cancelled streams; want at most %d", n, sent, bound)
	}
	if !r.logs.hasLog("connection closed", map[string]any{"reason": "rapid reset: the client cancelled most of its HTTP/2 requests"}) {
		t.Errorf("no log line says why the connection was closed:\n%s", r.logs)
	}
	// The proxy still serves everyone else.
	res := getOnce(w.clientTLS(w.ca.Leaf(t, webID)), "https://"+r.addr+"/ok")
	if res.err == nil && res.code == http.StatusOK {
		return
	}
	t.Errorf("after the flood a new client got %d, %v", res.code, res.err)
}

// TestInboundHTTP2StreamFlood: a client opens far more streams than the
// proxy allows and leaves them idle (request bodies never sent). The
// service sees at most HTTP2MaxConcurrentStreams requests from it, the
// rest are refused, and everything is released when the client goes.
func TestInboundHTTP2StreamFlood(t *testing.T) {
	w := newWorld(t)
	be := newBlockingBackend(t)
	r := runInbound(t, w, proxy.InboundConfig{Target: be.addr, Protocol: proxy.HTTP})
	before := runtime.NumGoroutine()
	h := dialH2(t, r.addr, w.clientTLS(w.ca.Leaf(t, webID)))
	d := drainH2(h)
	settle(h, d) // the server's SETTINGS are acknowledged: its limit applies
	const extra = 200
	for i := 0; i < proxy.HTTP2MaxConcurrentStreams+extra; i++ {
		if _, err := h.open("/idle", false); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	if settle(h, d) {
		t.Fatalf("the proxy closed the connection: %v", d.err)
	}
	eventually(t, "the backend holds the allowed streams", func() bool { return be.now.Load() == proxy.HTTP2MaxConcurrentStreams })
	if got := d.refusals.Load(); got != extra {
		t.Errorf("the proxy refused %d streams; want the %d past its limit", got, extra)
	}
	during := runtime.NumGoroutine()
	h.Close()
	eventually(t, "the backend's requests end with the client", func() bool { return be.now.Load() == 0 })
	eventually(t, "the proxy's connection count back to zero", func() bool {
		return metricValue(t, r.reg, "mutual_proxy_active_connections", nil) == 0
	})
	if peak := be.peak.Load(); peak > proxy.HTTP2MaxConcurrentStreams {
		t.Errorf("the backend had %d requests at once from one connection; the limit is %d", peak, proxy.HTTP2MaxConcurrentStreams)
	}
	// Goroutines (handlers, relays to the backend) go back to what they were.
	eventually(t, "goroutines released", func() bool { return runtime.NumGoroutine() <= before+10 })
	t.Logf("goroutines: %d before, %d with %d open streams, %d after", before, during, proxy.HTTP2MaxConcurrentStreams, runtime.NumGoroutine())
}

// TestInboundHTTP2ContinuationFlood: CVE-2024-27316 and kin. A client
// sends HEADERS without END_HEADERS and then CONTINUATION frames without
// end. The proxy must close the connection once the header block passes
// MaxHeaderBytes, without running a handler, rather than read on.
func TestInboundHTTP2ContinuationFlood(t *testing.T) {
	w := newWorld(t)
	be := newCountingBackend(t)
	r := runInbound(t, w, proxy.InboundConfig{Target: be.addr, Protocol: proxy.HTTP})
	h := dialH2(t, r.addr, w.clientTLS(w.ca.Leaf(t, webID)))
	defer h.Close()
	d := drainH2(h)
	closed, sent, werr := continuationFlood(h, d, 64<<20)
	t.Logf("sent %d bytes of header block (write error: %v); read error: %v; GOAWAY: %v", sent, werr, d.err, d.goAway.Load())
	if !closed {
		t.Fatalf("the proxy read %d bytes of one header block and kept the connection", sent)
	}
	if got := be.requests(); len(got) != 0 {
		t.Errorf("the backend received %q", got)
	}
	if n := len(requestLogs(r)); n != 0 {
		t.Errorf("the proxy ran %d handlers", n)
	}
}

// continuationFlood writes one header block of up to max bytes: HEADERS,
// then CONTINUATION frames of 16 KiB of distinct header fields. It reports
// whether the server ended the connection (a write failed or the reader saw
// the end), and how much was written.
func continuationFlood(h *h2Client, d *h2Drain, max int) (closed bool, sent int, werr error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	first := h.headerBlock("/flood")
	if werr = h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.next, BlockFragment: first, EndStream: true}); werr != nil {
		return true, 0, werr
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for i := 0; block.Len() < 16<<10; i++ {
		enc.WriteField(hpack.HeaderField{Name: fmt.Sprintf("x-flood-%d", i), Value: strings.Repeat("a", 100), Sensitive: true})
	}
	for sent = len(first); sent < max; sent += block.Len() {
		if werr = h.fr.WriteContinuation(h.next, false, block.Bytes()); werr != nil {
			return true, sent, werr
		}
		select {
		case <-d.done:
			return true, sent, nil
		default:
		}
	}
	select {
	case <-d.done:
		return true, sent, nil
	default:
		return false, sent, nil
	}
}

// settle sends a PING and waits for its answer (the server has then read
// every frame sent before it) or for the server to end the connection. It
// reports whether the connection ended.
func settle(h *h2Client, d *h2Drain) bool {
	h.mu.Lock()
	err := h.fr.WritePing(false, [8]byte{1})
	h.mu.Unlock()
	if err != nil {
		<-d.done
		return true
	}
	select {
	case <-d.pingAck:
		return false
	case <-d.done:
		return true
	}
}

func requestLogs(r *proxyRun) []map[string]any {
	var out []map[string]any
	for _, l := range r.logs.lines() {
		if l["msg"] == "request" {
			out = append(out, l)
		}
	}
	return out
}
