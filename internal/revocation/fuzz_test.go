package revocation_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/testca"
)

// FuzzFeedLine: the watcher reads whatever a (broken or hostile) feed
// streams without panicking, learns the revocations on the lines it
// accepted, tells its owner once per serial, and reconnects.
func FuzzFeedLine(f *testing.F) {
	c := testca.New(f)
	src := proxySource(f, c, nil)
	line := func(e revocation.Event) []byte { b, _ := json.Marshal(e); return b }
	now := time.Now().UTC().Truncate(time.Second)
	f.Add(append(append(line(revocation.Event{Seq: 1, Serial: "ab", SPIFFEID: "spiffe://example.org/x", Reason: 1, RevokedAt: now, NotAfter: now.Add(time.Hour)}), '\n'),
		append(line(revocation.Event{Seq: 1, Heartbeat: true}), '\n')...))
	f.Add([]byte("{\"seq\":2,\"serial\":\"cd\"}\n{\"seq\":3,\"serial\":\"cd\"}\n{\"seq\":3,\"heartbeat\":true}\n"))
	f.Add([]byte("not json\n{\"seq\":4,\"serial\":\"ef\"}\n"))
	f.Add([]byte("{\"seq\":-1,\"serial\":\"\"}\n{\"seq\":9223372036854775807,\"serial\":\"01\"}\n"))
	f.Add([]byte("{\"seq\":1,\"serial\":\"ab\",\"revoked_at\":\"yesterday\"}\n"))
	f.Add([]byte("{\"seq\":1,\"serial\":\"ab\",\"not_after\":\"2000-01-01T00:00:00Z\"}\n"))
	f.Add(bytes.Repeat([]byte("a"), 70<<10))
	f.Add([]byte("\n\n\r\n{}\n[]\nnull\n"))

	f.Fuzz(func(t *testing.T, body []byte) {
		// What the watcher should accept: the lines before the first it
		// cannot read, as it reads them.
		learnt := map[string]bool{}
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(make([]byte, 4096), 64<<10)
		for sc.Scan() {
			var e revocation.Event
			if json.Unmarshal(sc.Bytes(), &e) != nil {
				break
			}
			if !e.Heartbeat {
				learnt[e.Serial] = true
			}
		}

		var requests atomic.Int64
		secondAsk := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v1/revocations" {
				http.NotFound(w, r)
				return
			}
			if requests.Add(1) > 1 {
				// The watcher came back: it has finished with the body.
				select {
				case <-secondAsk:
				default:
					close(secondAsk)
				}
				http.Error(w, "gone", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.Write(body)
		}))
		defer srv.Close()

		var mu sync.Mutex
		told := map[string]int{}
		w := &revocation.Watcher{CAURLs: []string{srv.URL}, Source: src, CRLInterval: time.Millisecond,
			OnRevoke: func(e revocation.Event) { mu.Lock(); told[e.Serial]++; mu.Unlock() }}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		select {
		case <-secondAsk:
		case <-time.After(10 * time.Second):
			cancel()
			t.Fatal("the watcher did not come back after the feed ended")
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		for s := range learnt {
			if told[s] != 1 {
				t.Fatalf("serial %q told %d times, want once", s, told[s])
			}
		}
		for s, n := range told {
			if !learnt[s] {
				t.Fatalf("serial %q told %d times but not on an accepted line", s, n)
			}
		}
		if len(learnt) < 255 {
			// (Pruning of expired entries starts at 256.)
			for s := range learnt {
				if !w.Revoked(s) {
					t.Fatalf("serial %q accepted but not revoked", s)
				}
			}
		}
	})
}
