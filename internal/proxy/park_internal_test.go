//go:build linux

package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/testwait"
)

// tcpPair is two ends of one loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return s, c
}

// TestParkedAfterACrossedAsk: the watchdog's ask to park (flag, then a
// past read deadline) can straddle park() clearing an earlier one, leaving
// a parked direction with the flag down and a deadline that has passed.
// The next byte must still be relayed, not end the connection.
func TestParkedAfterACrossedAsk(t *testing.T) {
	_, p, client, svc := parkedPair(t)
	p.dirs[0].src.SetReadDeadline(longAgo)
	pingRelayed(t, client, svc)
}

// TestParkerStopped: when the parker's wait ends (an epoll error), every
// parked direction runs again in a goroutine and still relays; none parks
// after.
func TestParkerStopped(t *testing.T) {
	pk, _, client, svc := parkedPair(t)
	pk.ep.Close() // the wait fails
	testwait.Eventually(t, func() bool { return pk.parked.Load() == 0 && !pk.usable() }, "the parked directions to run again")
	pingRelayed(t, client, svc)
}

// waitRelayEnd closes both outer ends and waits for the relay to finish,
// so that nothing of it outlives the test (parkDelay is restored after).
func waitRelayEnd(t *testing.T, done chan struct{}, conns ...net.Conn) {
	t.Helper()
	for _, c := range conns {
		c.Close()
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the relay did not end after both outer ends closed")
	}
}

// parkedPair relays client<->svc through a relayPipe on its own parker,
// with a 10 ms park delay, and returns once both directions have parked;
// everything ends with the test (parkDelay restored last).
func parkedPair(t *testing.T) (pk *parker, p *relayPipe, client, svc net.Conn) {
	t.Helper()
	old := parkDelay
	parkDelay = 10 * time.Millisecond
	t.Cleanup(func() { parkDelay = old })
	pk = &parker{}
	t.Cleanup(pk.close)
	a, client := tcpPair(t)
	b, svc := tcpPair(t)
	p = newRelayPipe(a, b, Limits{IdleTimeout: time.Hour, HalfCloseTimeout: time.Hour}, pk)
	done := make(chan struct{})
	go p.run(func(ab, ba int64) { close(done) })
	t.Cleanup(func() { waitRelayEnd(t, done, client, svc) })
	testwait.Eventually(t, func() bool { return pk.parked.Load() == 2 }, "both directions parked")
	return pk, p, client, svc
}

// pingRelayed writes "ping" on client and wants it read on svc.
func pingRelayed(t *testing.T, client, svc net.Conn) {
	t.Helper()
	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	svc.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 4)
	if _, err := io.ReadFull(svc, got); err != nil || string(got) != "ping" {
		t.Fatalf("the service read %q, %v; want the client's ping relayed", got, err)
	}
}

// failingListener's Accept fails at once with an error that is not a
// timeout, as a listener whose socket broke does.
type failingListener struct{ net.Listener }

var errAcceptBroken = errors.New("accept: the listening socket broke")

func (failingListener) Accept() (net.Conn, error) { return nil, errAcceptBroken }

// TestServeErrorClosesParker: Serve returning on an accept error (not the
// context's end) closes the parker: its goroutine and epoll instance go,
// and no direction parks after.
func TestServeErrorClosesParker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := &Inbound{cfg: InboundConfig{Protocol: TCP, Limits: Limits{}.withDefaults()}, conns: map[net.Conn]*liveConn{}}
	if err := p.park.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.park.close)
	if err := p.Serve(context.Background(), failingListener{ln}); !errors.Is(err, errAcceptBroken) {
		t.Fatalf("Serve returned %v; want the accept error", err)
	}
	select {
	case <-p.park.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the parker's goroutine still waits on its epoll instance after Serve returned")
	}
	if p.park.usable() {
		t.Fatal("directions may still park after Serve returned")
	}
}

// TestArmClosedSocket: arming a direction whose socket has been closed
// says the socket is closed, not that epoll_ctl failed.
func TestArmClosedSocket(t *testing.T) {
	pk := &parker{}
	t.Cleanup(pk.close)
	a, _ := tcpPair(t)
	b, _ := tcpPair(t)
	h := newRelayPipe(a, b, Limits{IdleTimeout: time.Hour, HalfCloseTimeout: time.Hour}, pk).dirs[0]
	if h.sock == nil {
		t.Fatal("the direction has no socket to park")
	}
	a.Close()
	err := pk.arm(h)
	var se *os.SyscallError
	if !errors.Is(err, net.ErrClosed) || errors.As(err, &se) {
		t.Fatalf("arm(closed socket) = %v; want the closed socket's error, not epoll_ctl's", err)
	}
}
