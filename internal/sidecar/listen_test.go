package sidecar

import (
	"errors"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
)

// TestBoundPortKeepsOthersOut: while the proxy waits to listen, no other
// process (another local user included) may bind its port and listen
// first; with SO_REUSEADDR on the waiting socket, one with SO_REUSEADDR
// could, and would take the proxy's clients.
func TestBoundPortKeepsOthersOut(t *testing.T) {
	b, err := bindTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	if b.ln != nil {
		t.Fatal("a free port was listened on at once, not only bound")
	}
	port := b.Addr().(*net.TCPAddr).Port
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, syscall.IPPROTO_TCP)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		t.Fatal(err)
	}
	err = syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("another socket (SO_REUSEADDR) binding the waiting proxy's port: %v, want EADDRINUSE", err)
	}
}

// TestBoundPortAfterRestart: a port held only by a previous run's
// connections in TIME_WAIT is listened on at once (clients wait in the
// backlog), not refused.
func TestBoundPortAfterRestart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s.Close() // the server closes first: its side goes to TIME_WAIT
	buf := make([]byte, 1)
	c.Read(buf)
	c.Close()
	ln.Close()
	b, err := bindTCP(addr)
	if err != nil {
		t.Fatalf("bind a port held by TIME_WAIT connections: %v", err)
	}
	defer b.close()
	if b.ln == nil {
		t.Fatal("the port was bound past its TIME_WAIT connections without SO_REUSEADDR: the test did not make any")
	}
	l, err := b.listen()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial the restarted proxy's port: %v", err)
	}
	c.Close()
}

// TestBoundPortUnspecifiedIsBothFamilies: 0.0.0.0, as for net.Listen,
// means every address of both families.
func TestBoundPortUnspecifiedIsBothFamilies(t *testing.T) {
	if l, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no IPv6 loopback in CI: %v", err)
		}
		t.Skipf("no IPv6 loopback here (%v): cannot check both families", err)
	} else {
		l.Close()
	}
	b, err := bindTCP("0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	port := b.Addr().(*net.TCPAddr).Port
	l, err := b.listen()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, a := range []string{"127.0.0.1", "::1"} {
		c, err := net.Dial("tcp", net.JoinHostPort(a, strconv.Itoa(port)))
		if err != nil {
			t.Errorf("dial %s on a proxy listening on 0.0.0.0: %v", a, err)
			continue
		}
		c.Close()
	}
}
