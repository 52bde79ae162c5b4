package publish_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// TestWatcherFeedStaysUp: the push feed is a long-lived stream; a watcher
// subscribed to a healthy CA must stay subscribed for longer than the CA's
// HTTP timeouts (30 s), or every revocation made while it reconnects waits
// for the reconnection (seconds, growing with each drop) instead of
// arriving at once.
func TestWatcherFeedStaysUp(t *testing.T) {
	if testing.Short() {
		t.Skip("watches the feed for 35 s")
	}
	t.Parallel()
	e := startCA(t, "")
	src := e.proxyIdentity(t)
	w := &revocation.Watcher{CAURLs: []string{e.URL}, Source: src}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	testwait.Eventually(t, w.FeedUp, "the watcher never connected to the feed")
	up := time.Now()
	victim := e.Enroll(t, "spiffe://example.org/ns/prod/victim", api.TokenRequest{}).Leaf()

	// Watch the feed for 35 s: a drop fails the test.
	watched := time.NewTimer(35 * time.Second)
	defer watched.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for {
		select {
		case <-watched.C:
			return
		case <-poll.C:
		}
		if w.FeedUp() {
			continue
		}
		down := time.Now()
		t.Errorf("BUG: the revocation feed dropped %.1f s after the watcher subscribed, though the CA is healthy", down.Sub(up).Seconds())
		// What that costs: a revocation made now.
		e.revoke(t, victim, "keyCompromise")
		testwait.Eventually(t, func() bool { return w.Revoked(serialOf(victim)) }, "the watcher never learnt the revocation made while its feed was down")
		t.Logf("a revocation made while the feed was down was learnt after %d ms (feed back up: %v)", time.Since(down).Milliseconds(), w.FeedUp())
		return
	}
}
