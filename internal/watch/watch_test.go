package watch_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/watch"
)

// outcome is what one Reload answers.
type outcome struct {
	changed bool
	err     error
}

// TestLoopReportsEachPoll: every tick runs Reload once; a change reaches
// OnChange, an error OnError, and "nothing new" neither.
func TestLoopReportsEachPoll(t *testing.T) {
	boom := errors.New("half-written file")
	script := []outcome{{changed: true}, {}, {err: boom}, {changed: true}}
	var polls int
	var heard []string
	ticks := make(chan time.Time)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- watch.Loop{
			Reload: func(context.Context) (bool, error) {
				o := script[polls]
				polls++
				return o.changed, o.err
			},
			OnChange: func() { heard = append(heard, "change") },
			OnError: func(err error) {
				if !errors.Is(err, boom) {
					t.Errorf("OnError got %v, want the Reload error", err)
				}
				heard = append(heard, "error")
			},
			Ticks: ticks,
		}.Run(ctx)
	}()
	for range script {
		ticks <- time.Time{}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	// Run has returned: polls and heard are no longer written.
	if polls != len(script) {
		t.Fatalf("Reload ran %d times for %d ticks", polls, len(script))
	}
	want := []string{"change", "error", "change"}
	if len(heard) != len(want) {
		t.Fatalf("heard %v, want %v", heard, want)
	}
	for i := range want {
		if heard[i] != want[i] {
			t.Fatalf("heard %v, want %v", heard, want)
		}
	}
}

// TestLoopStopsWithoutPolling: a loop cancelled before any tick returns nil
// and never calls Reload; nil callbacks are allowed.
func TestLoopStopsWithoutPolling(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := watch.Loop{
		Reload: func(context.Context) (bool, error) { t.Error("Reload called after cancel"); return false, nil },
		Ticks:  make(chan time.Time),
	}.Run(ctx)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestLoopRealTimer: without Ticks the loop polls on its own timer.
func TestLoopRealTimer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	polled := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- watch.Loop{
			Reload: func(context.Context) (bool, error) {
				select {
				case polled <- struct{}{}:
				default:
				}
				return false, nil
			},
			Interval: time.Millisecond,
		}.Run(ctx)
	}()
	select {
	case <-polled:
	case <-time.After(10 * time.Second):
		t.Fatal("no poll within 10s")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestTriggerPollsEveryLoopAtOnce: one Fire makes every loop following the
// trigger poll, though their timers would not tick for an hour; a loop
// that has stopped no longer follows it.
func TestTriggerPollsEveryLoopAtOnce(t *testing.T) {
	var now watch.Trigger
	ctx, cancel := context.WithCancel(context.Background())
	polled := []chan struct{}{make(chan struct{}, 1), make(chan struct{}, 1)}
	done := make(chan error, len(polled))
	for _, p := range polled {
		go func() {
			done <- watch.Loop{
				Reload: func(context.Context) (bool, error) {
					select {
					case p <- struct{}{}:
					default:
					}
					return false, nil
				},
				Interval: time.Hour,
				Now:      &now,
			}.Run(ctx)
		}()
	}
	for i, p := range polled {
		// A Fire before the loop has started is not seen: fire until it is.
		deadline := time.After(10 * time.Second)
	wait:
		for {
			now.Fire()
			select {
			case <-p:
				break wait
			case <-deadline:
				t.Fatalf("loop %d did not poll on Fire", i)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	cancel()
	for range polled {
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
	}
	now.Fire() // no loop follows it: must not block
}
