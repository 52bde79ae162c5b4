package proxy

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// parkDelay is how long a tcp-mode connection stays silent before its
// relay directions park (relayPipe).
var parkDelay = 500 * time.Millisecond

// parker waits, in one goroutine for the whole proxy, on the sockets of
// idle relay directions, so that an idle connection keeps no goroutine
// (and no stack) of its own. Each parked socket is registered once-only
// (EPOLLONESHOT) in an epoll instance that the Go runtime's poller
// watches; when one is ready, its direction runs again in a new
// goroutine.
type parker struct {
	once sync.Once
	err  error
	ep   *os.File
	// epc reaches ep's descriptor for epoll_ctl; holding it through the
	// call keeps a concurrent close from freeing the number for reuse.
	epc syscall.RawConn
	// done is closed when the goroutine waiting on ep has ended.
	done chan struct{}

	mu     sync.Mutex
	next   uint64
	halves map[uint64]*relayHalf
	// parked counts the directions parked now; woken, the wakes of parked
	// directions so far.
	parked, woken atomic.Int64
	// broken says why the wait on the epoll instance ended (closed, or an
	// error): no direction parks any more; stopped says so without the lock.
	broken  error
	stopped atomic.Bool
}

var errParkerClosed = errors.New("relay parker closed")

// start creates the epoll instance and the goroutine that waits on it,
// once; it returns why parking is unavailable, if it is.
func (pk *parker) start() error {
	pk.once.Do(func() {
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			pk.err = os.NewSyscallError("epoll_create1", err)
			return
		}
		if err := syscall.SetNonblock(fd, true); err != nil {
			syscall.Close(fd)
			pk.err = os.NewSyscallError("fcntl", err)
			return
		}
		pk.ep = os.NewFile(uintptr(fd), "relay-parker")
		rc, err := pk.ep.SyscallConn()
		if err != nil {
			pk.ep.Close()
			pk.err = fmt.Errorf("relay parker: %w", err)
			return
		}
		pk.epc = rc
		pk.halves = map[uint64]*relayHalf{}
		pk.done = make(chan struct{})
		go pk.run(rc)
	})
	return pk.err
}

// arm registers h's socket to wake h once it is readable (or closed). If
// it already is, the wake comes at once.
func (pk *parker) arm(h *relayHalf) error {
	if err := pk.start(); err != nil {
		return err
	}
	pk.mu.Lock()
	if pk.broken != nil {
		pk.mu.Unlock()
		return pk.broken
	}
	if h.token == 0 {
		pk.next++
		h.token = pk.next
		pk.halves[h.token] = h
	}
	pk.mu.Unlock()
	op := syscall.EPOLL_CTL_MOD
	if !h.armed {
		op = syscall.EPOLL_CTL_ADD
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(h.token), Pad: int32(h.token >> 32)}
	// The epoll instance's, the socket's and epoll_ctl's errors stay
	// apart: a socket closed meanwhile is not epoll_ctl's failure.
	var serr, cerr error
	err := pk.epc.Control(func(epfd uintptr) {
		serr = h.sock.Control(func(fd uintptr) { cerr = syscall.EpollCtl(int(epfd), op, int(fd), &ev) })
	})
	switch {
	case err != nil:
		return fmt.Errorf("the parker's epoll instance: %w", err)
	case serr != nil:
		return fmt.Errorf("the parked socket: %w", serr)
	case cerr != nil:
		return os.NewSyscallError("epoll_ctl", cerr)
	}
	h.armed = true
	return nil
}

// forget drops an ended direction. Its socket leaves the epoll instance
// when it is closed.
func (pk *parker) forget(h *relayHalf) {
	pk.mu.Lock()
	delete(pk.halves, h.token)
	pk.mu.Unlock()
}

// run wakes the directions whose sockets are ready until the parker is
// closed.
func (pk *parker) run(rc syscall.RawConn) {
	defer close(pk.done)
	events := make([]syscall.EpollEvent, 64)
	for {
		var n int
		var werr error
		err := rc.Read(func(fd uintptr) bool {
			n, werr = syscall.EpollWait(int(fd), events, 0)
			return n > 0 || (werr != nil && werr != syscall.EINTR)
		})
		if err != nil || werr != nil {
			pk.fail(errors.Join(err, werr))
			return
		}
		for _, ev := range events[:n] {
			token := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			pk.mu.Lock()
			h := pk.halves[token]
			pk.mu.Unlock()
			if h != nil {
				h.wake()
			}
		}
	}
}

// usable says whether directions may still park.
func (pk *parker) usable() bool { return !pk.stopped.Load() }

// fail ends parking: every direction registered runs again in a goroutine
// of its own (a parked one would otherwise wait for ever), and none parks
// after.
func (pk *parker) fail(err error) {
	pk.mu.Lock()
	pk.broken = fmt.Errorf("relay parker stopped: %w", err)
	pk.stopped.Store(true)
	halves := make([]*relayHalf, 0, len(pk.halves))
	for _, h := range pk.halves {
		halves = append(halves, h)
	}
	pk.mu.Unlock()
	for _, h := range halves {
		h.wake()
	}
}

// close stops the parker: its goroutine ends, and any direction still
// parked runs again in a goroutine of its own (fail). Closing twice is
// harmless.
func (pk *parker) close() {
	pk.once.Do(func() { pk.err = errParkerClosed })
	if pk.ep != nil {
		pk.ep.Close()
	}
}
