package proxy_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// TestRotationUnderLoad: the proxy's identity directory is rewritten ~20
// times while clients keep calling through it, on fresh connections and on
// a kept-alive one. Not one request may fail, and fresh connections must
// see the new certificates.
func TestRotationUnderLoad(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var reloadErrors atomic.Int64
	srcDone := make(chan struct{})
	go func() {
		defer close(srcDone)
		w.src.Run(ctx, 50*time.Millisecond, func(error) { reloadErrors.Add(1) })
	}()
	defer func() { cancel(); <-srcDone }()

	hp := runInbound(t, w, proxy.InboundConfig{Target: httpBackend(t), Protocol: proxy.HTTP})
	tp := runInbound(t, w, proxy.InboundConfig{Target: testnet.Echo(t)})
	client := w.ca.Leaf(t, webID)

	var (
		mu       sync.Mutex
		serials  = map[string]int{} // served serial → times seen on a fresh connection
		failures []string
		requests atomic.Int64
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, fmt.Sprintf(format, args...))
	}
	saw := func(cs *tls.ConnectionState) {
		mu.Lock()
		defer mu.Unlock()
		serials[pki.FormatSerial(cs.PeerCertificates[0].SerialNumber)]++
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	loop := func(once func(i int)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				once(i)
				requests.Add(1)
			}
		}()
	}
	// Fresh HTTP connections (no keep-alive, no session resumption).
	for n := range 2 {
		fresh := &http.Transport{TLSClientConfig: w.clientTLS(client), ForceAttemptHTTP2: true, DisableKeepAlives: true}
		defer fresh.CloseIdleConnections()
		fc := &http.Client{Transport: fresh, Timeout: 10 * time.Second}
		loop(func(i int) {
			res := doRequest(fc, "GET", fmt.Sprintf("https://%s/fresh/%d/%d", hp.addr, n, i), nil)
			if res.err != nil || res.code != 200 {
				fail("fresh http %d/%d: %d %v", n, i, res.code, res.err)
				return
			}
			saw(res.resp.TLS)
		})
	}
	// One kept-alive HTTP/2 connection.
	kept := httpClient(t, w.clientTLS(client))
	loop(func(i int) {
		res := doRequest(kept, "POST", fmt.Sprintf("https://%s/kept/%d", hp.addr, i), nil)
		if res.err != nil || res.code != 200 || len(res.seen.XFCC) != 1 {
			fail("kept-alive http %d: %d %v", i, res.code, res.err)
		}
	})
	// Fresh tcp-mode connections.
	loop(func(i int) {
		msg := fmt.Sprintf("message %d\n", i)
		if got, err := testnet.RoundTrip(tp.addr, w.clientTLS(client), msg); err != nil || got != msg {
			fail("tcp %d: %q %v", i, got, err)
		}
	})

	// Rotate.
	var last string
	for i := range 20 {
		id := w.ca.Leaf(t, proxyID, testca.IP("127.0.0.1"), testca.DNS("localhost"))
		changed := w.src.Changed()
		if err := id.Save(w.dir); err != nil {
			t.Fatal(err)
		}
		last = pki.FormatSerial(id.Leaf().SerialNumber)
		select {
		case <-changed:
		case <-time.After(10 * time.Second):
			t.Fatalf("rotation %d not picked up by the source", i)
		}
		// Let traffic run on this identity: wait until a fresh connection
		// has been served with it.
		testwait.Eventually(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return serials[last] > 0
		}, "traffic on certificate "+last)
	}
	// Fresh connections end up on the last certificate.
	testwait.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return serials[last] > 0
	}, "the last certificate served")
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d requests, %d distinct server certificates seen on fresh connections, %d transient reload errors",
		requests.Load(), len(serials), reloadErrors.Load())
	if len(failures) > 0 {
		n := min(len(failures), 10)
		t.Errorf("%d of %d requests failed during rotation; first %d: %q", len(failures), requests.Load(), n, failures[:n])
	}
	if len(serials) < 2 {
		t.Errorf("the served certificate never changed: %v", serials)
	}
	if got := w.src.Identity().Leaf().SerialNumber; fmt.Sprintf("%x", got) != last {
		t.Errorf("source serves %x, want the last written %s", got, last)
	}
}
