package publish_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/revocation/publish"
	"github.com/mutual-tls/mutual/internal/store"
)

// memEvents is a fixture: a revocation log in memory.
type memEvents struct {
	mu  sync.Mutex
	evs []store.RevocationEvent
}

func (m *memEvents) add(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for range n {
		seq := int64(len(m.evs) + 1)
		m.evs = append(m.evs, store.RevocationEvent{Seq: seq, Serial: fmt.Sprintf("%x", 0x1000+seq), SPIFFEID: "spiffe://example.org/w",
			Reason: 1, RevokedAt: time.Now(), NotAfter: time.Now().Add(time.Hour)})
	}
}

func (m *memEvents) RevocationsSince(_ context.Context, seq int64, limit int) ([]store.RevocationEvent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.RevocationEvent
	for _, e := range m.evs {
		if e.Seq > seq && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}

func (m *memEvents) LastRevocationSeq(context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.evs)), nil
}

// readFeed reads n events and then expects a heartbeat (or, with n < 0,
// reads up to the first heartbeat).
func readFeed(t *testing.T, sc *bufio.Scanner, n int) ([]revocation.Event, revocation.Event) {
	t.Helper()
	var evs []revocation.Event
	for sc.Scan() {
		var e revocation.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if e.Heartbeat {
			if n >= 0 && len(evs) != n {
				t.Fatalf("heartbeat after %d events, want %d", len(evs), n)
			}
			return evs, e
		}
		evs = append(evs, e)
	}
	t.Fatalf("feed ended after %d events: %v", len(evs), sc.Err())
	return nil, revocation.Event{}
}

// TestHubPagesHistory: a history longer than one page (1000) is replayed
// whole and in order from any point, then new events arrive live.
func TestHubPagesHistory(t *testing.T) {
	t.Parallel()
	st := &memEvents{}
	st.add(2500)
	h := &publish.Hub{Store: st, Poll: 20 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	srv := httptest.NewServer(http.HandlerFunc(h.ServeFeed))
	t.Cleanup(func() { srv.Close(); cancel(); <-done })

	for _, since := range []int64{0, 1, 999, 1000, 1001, 2000, 2499, 2500, 4000} {
		resp, err := http.Get(fmt.Sprintf("%s/?since=%d", srv.URL, since))
		if err != nil {
			t.Fatal(err)
		}
		want := max(0, 2500-since)
		evs, hb := readFeed(t, bufio.NewScanner(resp.Body), int(want))
		resp.Body.Close()
		for i, e := range evs {
			if e.Seq != since+int64(i)+1 {
				t.Fatalf("since=%d: event %d has seq %d", since, i, e.Seq)
			}
		}
		if hb.Seq != max(since, 2500) {
			t.Fatalf("since=%d: heartbeat seq %d", since, hb.Seq)
		}
	}

	// Live: subscribe, then events are added and the hub is poked.
	resp, err := http.Get(srv.URL + "/?since=2500")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	readFeed(t, sc, 0)
	st.add(3)
	h.Poke()
	for want := int64(2501); want <= 2503; want++ {
		if !sc.Scan() {
			t.Fatalf("feed ended: %v", sc.Err())
		}
		var e revocation.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Seq != want || e.Heartbeat {
			t.Fatalf("live line %q, want seq %d", sc.Text(), want)
		}
	}
	// A bad since is read as 0.
	r2, err := http.Get(srv.URL + "/?since=banana")
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Body.Close()
	if evs, _ := readFeed(t, bufio.NewScanner(r2.Body), -1); len(evs) != 2503 {
		t.Fatalf("since=banana replayed %d events", len(evs))
	}
}
