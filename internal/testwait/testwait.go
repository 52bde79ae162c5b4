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

// A condition is polled at once, then after firstInterval, each wait half
// as long again as the one before up to maxInterval: quick conditions are
// seen quickly, and costly ones (a subprocess, a handshake) are not run in
// a tight loop.
const (
	firstInterval = 10 * time.Millisecond
	maxInterval   = 250 * time.Millisecond
)

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
	wait := firstInterval
	timer := time.NewTimer(wait)
	defer timer.Stop()
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
		<-timer.C
		wait = min(wait*3/2, maxInterval)
		timer.Reset(wait)
	}
}

type notYet struct{}

func (notYet) Error() string { return "not yet" }

var errNotYet error = notYet{}
