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

// SetNow replaces the report's clock, so that a test states the times it
// records instead of sleeping for them to differ.
func (r *MigrationReport) SetNow(now func() time.Time) { r.now = now }
