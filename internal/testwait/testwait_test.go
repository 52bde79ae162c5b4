package testwait_test

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/mutual-tls/mutual/internal/testwait"
)

// TestEventuallyReturnsOnceTheConditionHolds: the condition is polled
// again until it holds, and not after.
func TestEventuallyReturnsOnceTheConditionHolds(t *testing.T) {
	var n atomic.Int32
	testwait.Eventually(t, func() bool { return n.Add(1) == 3 }, "the third poll")
	if got := n.Load(); got != 3 {
		t.Fatalf("polled %d times, want 3", got)
	}
}

// TestEventuallyNilRetriesErrors: an error means "not yet".
func TestEventuallyNilRetriesErrors(t *testing.T) {
	n := 0
	testwait.EventuallyNil(t, func() error {
		if n++; n < 2 {
			return errors.New("not ready")
		}
		return nil
	}, "the second try")
	if n != 2 {
		t.Fatalf("tried %d times, want 2", n)
	}
}
