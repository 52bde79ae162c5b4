package proxy

import (
	"context"
	"time"
)

// RunTicks is Run with each poll driven by a value on ticks instead of
// the clock.
func (f *PolicyFile) RunTicks(ctx context.Context, ticks <-chan time.Time) error {
	l := f.Loop(0)
	l.Ticks = ticks
	return l.Run(ctx)
}
