package identity

import (
	"context"
	"time"
)

// RunTicks is Run with each poll driven by a value on ticks instead of
// the clock.
func (s *DirSource) RunTicks(ctx context.Context, ticks <-chan time.Time, onError func(error)) error {
	l := s.loop(0, onError)
	l.Ticks = ticks
	return l.Run(ctx)
}
