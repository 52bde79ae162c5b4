//go:build !linux

package proxy

import (
	"errors"
	"sync/atomic"
	"time"
)

// parkDelay is how long a tcp-mode connection stays silent before its
// relay directions would park; parking needs epoll (Linux).
var parkDelay = 500 * time.Millisecond

// parker is unavailable here: idle relay directions wait in their
// goroutines.
type parker struct {
	// parked counts the directions parked now, woken the wakes of parked
	// ones: always 0.
	parked, woken atomic.Int64
}

func (pk *parker) usable() bool         { return false }
func (pk *parker) arm(*relayHalf) error { return errors.New("relay parking needs Linux") }
func (pk *parker) forget(*relayHalf)    {}
func (pk *parker) close()               {}
