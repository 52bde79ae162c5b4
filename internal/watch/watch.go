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
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticks:
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
