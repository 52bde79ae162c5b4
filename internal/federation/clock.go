package federation

import (
	"sync"
	"time"
)

// ManualClock is a Clock that moves only when Advance is called: After
// fires once the time passes its deadline. Tests drive the refresh with it.
type ManualClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters map[chan time.Time]time.Time
}

// NewManualClock is a ManualClock at now.
func NewManualClock(now time.Time) *ManualClock { return &ManualClock{now: now} }

// Now returns the clock's time.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After returns a channel that receives the time once Advance has moved it
// d past now (at once when d is not positive).
func (c *ManualClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	if c.waiters == nil {
		c.waiters = map[chan time.Time]time.Time{}
	}
	c.waiters[ch] = c.now.Add(d)
	return ch
}

// Advance moves the time by d and fires what is due.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for ch, at := range c.waiters {
		if !at.After(c.now) {
			ch <- c.now
			delete(c.waiters, ch)
		}
	}
}
