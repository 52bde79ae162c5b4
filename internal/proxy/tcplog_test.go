package proxy_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// openTCP opens a connection to the tcp-mode proxy at addr (TLS with id's
// certificate, or without one when id is nil; plaintext when plain) and
// pings through it.
func openTCP(t *testing.T, w *world, addr string, id *identity.Identity, plain bool) *rawConn {
	t.Helper()
	var c net.Conn
	var err error
	if plain {
		c, err = net.DialTimeout("tcp", addr, 10*time.Second)
	} else {
		// The timeout covers the handshake: a proxy that stopped
		// accepting fails the test instead of hanging it.
		c, err = tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, w.clientTLS(id))
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	rc := &rawConn{Conn: c, br: bufio.NewReader(c)}
	if err := ping(rc, proxy.TCP); err != nil {
		t.Fatal(err)
	}
	return rc
}

// notLogged is the sum of the "connections not logged" lines' counts.
func notLogged(logs *testlog.Buffer) float64 {
	var n float64
	for _, r := range logs.Records() {
		if r["msg"] == "connections not logged" {
			n += r["count"].(float64)
		}
	}
	return n
}

// TestTCPConnectionLinesNotSampledAway: with every sampled mTLS line
// dropped, ordinary mTLS connections are only counted (the count logged at
// the drain at the latest), but a permissive-mode connection without mTLS
// (its own limit) and connections closed by revocation or by the drain
// have their lines, with closed_by naming who closed them.
func TestTCPConnectionLinesNotSampledAway(t *testing.T) {
	w := newWorld(t)
	r := runInboundOn(t, w, proxy.InboundConfig{Target: testnet.Echo(t), Mode: proxy.Permissive, Limits: proxy.Limits{DrainTimeout: 300 * time.Millisecond}},
		testnet.Listen(t), (*proxy.Inbound).SampleNoLines)
	staging := w.ca.Leaf(t, stagingID)
	for range 2 {
		openTCP(t, w, r.addr, staging, false).Close()
	}
	openTCP(t, w, r.addr, nil, true).Close()
	testwait.Eventually(t, func() bool { return r.logs.Has("connection", map[string]any{"mtls": false, "peer_id": ""}) },
		"the plaintext connection's line")

	revoked := w.ca.Leaf(t, webID)
	c := openTCP(t, w, r.addr, revoked, false)
	serial := pki.FormatSerial(revoked.Leaf().SerialNumber)
	if n := r.p.CloseConnections(func(_ spiffeid.ID, s string) bool { return s == serial }); n != 1 {
		t.Fatalf("CloseConnections closed %d, want 1", n)
	}
	if ping(c, proxy.TCP) == nil {
		t.Fatal("the revoked peer's connection still works")
	}
	testwait.Eventually(t, func() bool {
		return r.logs.Has("connection", map[string]any{"peer_id": webID, "serial": serial, "mtls": true, "closed_by": "revocation"})
	}, "the revoked connection's line")

	openTCP(t, w, r.addr, staging, false) // open until the drain cuts it
	testwait.Eventually(t, func() bool { return r.p.Active() == 1 }, "the ended connections released")
	if err := r.stop(t); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if !r.logs.Has("connection", map[string]any{"peer_id": stagingID, "closed_by": "drain"}) {
		t.Errorf("no line for the connection the drain closed:\n%s", r.logs.String())
	}
	for _, rec := range r.logs.Records() {
		if _, closed := rec["closed_by"]; rec["msg"] == "connection" && rec["peer_id"] == stagingID && !closed {
			t.Errorf("an ordinary mTLS connection was logged past a limit of zero: %v", rec)
		}
	}
	if n := notLogged(r.logs); n != 2 {
		t.Errorf("the connections not logged add up to %v, want 2:\n%s", n, r.logs.String())
	}
}

// TestTCPPlaintextLinesSampledApart: connections without mTLS have a limit
// of their own: past it they are only counted, in their own line, and the
// mTLS connections' lines are untouched by them.
func TestTCPPlaintextLinesSampledApart(t *testing.T) {
	w := newWorld(t)
	r := runInboundOn(t, w, proxy.InboundConfig{Target: testnet.Echo(t), Mode: proxy.Permissive},
		testnet.Listen(t), (*proxy.Inbound).SampleNoPlainLines)
	for range 3 {
		openTCP(t, w, r.addr, nil, true).Close()
	}
	openTCP(t, w, r.addr, w.ca.Leaf(t, stagingID), false).Close()
	testwait.Eventually(t, func() bool { return r.logs.Has("connection", map[string]any{"peer_id": stagingID, "mtls": true}) },
		"the mTLS connection's line")
	testwait.Eventually(t, func() bool { return r.p.Active() == 0 }, "the plaintext connections released")
	if err := r.stop(t); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	var plain, counted float64
	for _, rec := range r.logs.Records() {
		switch {
		case rec["msg"] == "connection" && rec["mtls"] == false:
			plain++
		case rec["msg"] == "connections without mTLS not logged":
			counted += rec["count"].(float64)
		}
	}
	if plain != 0 || counted != 3 {
		t.Errorf("%v plaintext connection lines and %v counted, want 0 and 3:\n%s", plain, counted, r.logs.String())
	}
	if n := notLogged(r.logs); n != 0 {
		t.Errorf("%v mTLS connections counted as not logged, want 0", n)
	}
}

// flakyListener's Accept fails with EMFILE, as when the process is out of
// file descriptors, fails times, then accepts.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestServeRetriesTemporaryAcceptErrors: accept errors that pass (EMFILE)
// are logged and retried; the proxy serves on.
func TestServeRetriesTemporaryAcceptErrors(t *testing.T) {
	w := newWorld(t)
	ln := &flakyListener{Listener: testnet.Listen(t)}
	ln.fails.Store(3)
	r := runInboundOn(t, w, proxy.InboundConfig{Target: testnet.Echo(t)}, ln, nil)
	openTCP(t, w, r.addr, w.ca.Leaf(t, webID), false)
	r.stillServing(t, "after accept failed with EMFILE")
	var retries int
	for _, rec := range r.logs.Records() {
		if rec["msg"] == "accept failed; retrying" {
			retries++
		}
	}
	if retries != 3 {
		t.Errorf("%d accept retries logged, want 3:\n%s", retries, r.logs.String())
	}
}

// breakingListener accepts once, then fails for good once broken is
// closed, as a listening socket that broke.
type breakingListener struct {
	net.Listener
	accepted atomic.Bool
	broken   chan struct{}
}

var errListenerBroken = errors.New("accept: the listening socket broke")

func (l *breakingListener) Accept() (net.Conn, error) {
	if l.accepted.CompareAndSwap(false, true) {
		return l.Listener.Accept()
	}
	<-l.broken
	return nil, errListenerBroken
}

// TestServeAcceptErrorDrains: Serve ending on an accept error that does
// not pass drains and closes the connections it relays before returning
// the error.
func TestServeAcceptErrorDrains(t *testing.T) {
	w := newWorld(t)
	ln := &breakingListener{Listener: testnet.Listen(t), broken: make(chan struct{})}
	r := runInboundOn(t, w, proxy.InboundConfig{Target: testnet.Echo(t), Limits: proxy.Limits{DrainTimeout: 300 * time.Millisecond}}, ln, nil)
	c := openTCP(t, w, r.addr, w.ca.Leaf(t, webID), false)
	close(ln.broken)
	select {
	case err := <-r.done:
		r.stopped = true
		if !errors.Is(err, errListenerBroken) {
			t.Fatalf("Serve returned %v; want the accept error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after a permanent accept error")
	}
	if ping(c, proxy.TCP) == nil {
		t.Fatal("a connection still relays after Serve returned")
	}
	if !r.logs.Has("connection", map[string]any{"peer_id": webID, "closed_by": "drain"}) {
		t.Errorf("no line for the connection the drain closed:\n%s", r.logs.String())
	}
}
