// Package watch owns the loop that follows something on disk (an identity
// directory, a policy file, a CRL): poll it on a timer, reload it when it
// changed, and report what happened, until the context is done.
//
// The loop is one place so that every follower stops the same way, reports
// a failed reload the same way (the last good state stays in force), and
// can be driven by a test through Ticks instead of by the clock.
package watch

import (
	"context"
	"sync"
	"time"
)

// DefaultInterval is the poll interval when Loop.Interval is zero.
const DefaultInterval = time.Second

// Loop polls Reload until the context given to Run is done.
type Loop struct {
	// Reload looks at the watched thing and reloads it if it changed; it
	// reports whether it did. An error means the last good state stays in
	// force. Required.
	Reload func(context.Context) (changed bool, err error)
	// OnChange, if set, is called after every Reload that changed something.
	OnChange func()
	// OnError, if set, is called with every error Reload returns.
	OnError func(error)
	// Interval is the time between polls; zero means DefaultInterval.
	// Ignored when Ticks is set.
	Interval time.Duration
	// Ticks, if set, replaces the timer: Reload runs once for every value
	// received. Tests send ticks instead of waiting; with an unbuffered
	// channel a send returns only once the previous poll has finished.
	Ticks <-chan time.Time
	// Now, if set, makes Reload run at once each time it fires (SIGHUP),
	// besides the timer or Ticks.
	Now *Trigger
}

// Trigger tells every loop that follows it to poll at once: a process
// fires it on SIGHUP so that an operator need not wait for the next poll.
// The zero value is ready to use; it is safe for concurrent use.
type Trigger struct {
	mu   sync.Mutex
	subs map[chan struct{}]struct{}
}

// Fire makes every loop following t poll once, as soon as its current
// poll (if any) is done. Fires that come while a poll is pending are
// merged into it.
func (t *Trigger) Fire() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.subs {
		select {
		case c <- struct{}{}:
		default: // a poll is pending already
		}
	}
}

// subscribe returns a channel that receives once per Fire, and the
// function that stops it.
func (t *Trigger) subscribe() (<-chan struct{}, func()) {
	c := make(chan struct{}, 1)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.subs == nil {
		t.subs = map[chan struct{}]struct{}{}
	}
	t.subs[c] = struct{}{}
	return c, func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		delete(t.subs, c)
	}
}

// Run polls until ctx is done, then returns nil. The first poll comes one
// interval (or one tick) after the start: the caller has loaded the state
// once already, and that load decides whether it can start at all.
func (l Loop) Run(ctx context.Context) error {
	ticks := l.Ticks
	if ticks == nil {
		interval := l.Interval
		if interval <= 0 {
			interval = DefaultInterval
		}
		t := time.NewTicker(interval)
		defer t.Stop()
		ticks = t.C
	}
	var now <-chan struct{} // nil: never
	if l.Now != nil {
		c, stop := l.Now.subscribe()
		defer stop()
		now = c
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticks:
			l.poll(ctx)
		case <-now:
			l.poll(ctx)
		}
	}
}

func (l Loop) poll(ctx context.Context) {
	changed, err := l.Reload(ctx)
	switch {
	case err != nil:
		if l.OnError != nil {
			l.OnError(err)
		}
	case changed:
		if l.OnChange != nil {
			l.OnChange()
		}
	}
}
