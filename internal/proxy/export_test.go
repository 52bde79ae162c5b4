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

// ParkedRelays returns how many tcp-mode relay directions are parked.
func (p *Inbound) ParkedRelays() int64 { return p.park.parked.Load() }

// ParkWakes returns how many times a parked tcp-mode relay direction has
// been started again.
func (p *Inbound) ParkWakes() int64 { return p.park.woken.Load() }

// ParkDelay is how long a tcp-mode connection stays silent before its
// relay parks.
func ParkDelay() time.Duration { return parkDelay }

// SetParkDelay sets how long a tcp-mode connection stays silent before its
// relay parks, until the returned function restores it.
func SetParkDelay(d time.Duration) (restore func()) {
	old := parkDelay
	parkDelay = d
	return func() { parkDelay = old }
}

// SampleNoLines makes every sampled log line of forwarded requests and
// mTLS connections go unlogged (a limit of zero a second, which
// RequestLogLimit cannot say), so that a test tells the lines always
// logged from the sampled ones whatever the clock. Call it before Serve.
func (p *Inbound) SampleNoLines() { p.sample.limit = 0 }

// SampleNoPlainLines does the same for tcp connections without mTLS.
func (p *Inbound) SampleNoPlainLines() { p.samplePlain.limit = 0 }
