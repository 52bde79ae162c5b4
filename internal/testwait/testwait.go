// Package testwait makes tests wait for what they expect to happen instead
// of sleeping: a condition is polled until it holds or a generous deadline
// passes. The deadline is a safety net against a hung test, never a timing
// requirement, so it is long and the same everywhere.
package testwait

import (
	"testing"
	"time"
)

// Deadline is how long Eventually and EventuallyNil wait before they fail
// the test.
const Deadline = 60 * time.Second

// interval is how often a condition is polled.
const interval = 10 * time.Millisecond

// Eventually polls cond until it returns true; it fails t with msg when
// Deadline passes first. cond runs on the test's goroutine, so it may call
// t.Fatal itself (say, when the thing waited for has exited).
func Eventually(t testing.TB, cond func() bool, msg string) {
	t.Helper()
	EventuallyNil(t, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	}, msg)
}

// EventuallyNil polls f until it returns nil; it fails t with msg and f's
// last error when Deadline passes first.
func EventuallyNil(t testing.TB, f func() error, msg string) {
	t.Helper()
	deadline := time.Now().Add(Deadline)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			if err == errNotYet {
				t.Fatalf("waited %s for %s", Deadline, msg)
			}
			t.Fatalf("waited %s for %s: %v", Deadline, msg, err)
		}
		<-tick.C
	}
}

type notYet struct{}

func (notYet) Error() string { return "not yet" }

var errNotYet error = notYet{}
