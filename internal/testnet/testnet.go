// Package testnet runs real servers on loopback sockets for tests: a
// listener, an accept loop, an echo service, a TLS server. Everything it
// starts is stopped when the test ends (listener closed, open connections
// closed, every goroutine it started waited for), so a test leaks nothing
// into the next one.
package testnet

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/testwait"
)

// handshakeTimeout bounds a TLS handshake on a server of this package, so
// that a client that stalls cannot hold a connection for the whole test.
const handshakeTimeout = 10 * time.Second

// Listen returns a TCP listener on a free port of 127.0.0.1, closed at the
// end of the test.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testnet: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// Serve runs handle for every connection accepted on a fresh loopback
// listener and returns its address. handle need not close the connection.
func Serve(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln := Listen(t)
	ServeOn(t, ln, handle)
	return ln.Addr().String()
}

// ServeOn runs handle for every connection accepted on ln (any listener: a
// tls or spiffetls one as well) until the end of the test, when it closes
// ln and every open connection and waits for the handlers to return.
func ServeOn(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	var (
		mu     sync.Mutex
		conns  = map[net.Conn]struct{}{}
		closed bool
		wg     sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			conns[c] = struct{}{}
			wg.Add(1)
			mu.Unlock()
			go func() {
				defer wg.Done()
				defer func() {
					c.Close()
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
				}()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// Echo is a plaintext TCP service on loopback that sends back every byte it
// receives and closes at EOF; it returns its address.
func Echo(t testing.TB) string {
	t.Helper()
	return Serve(t, func(c net.Conn) { io.Copy(c, c) })
}

// ServeTLS runs a crypto/tls server with cfg on loopback and returns its
// address. After each successful handshake it runs handle, or, when handle
// is nil, reads until the client goes away.
func ServeTLS(t testing.TB, cfg *tls.Config, handle func(*tls.Conn)) string {
	t.Helper()
	return Serve(t, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		tc.SetDeadline(time.Now().Add(handshakeTimeout))
		if tc.Handshake() != nil {
			return
		}
		tc.SetDeadline(time.Time{})
		if handle == nil {
			io.Copy(io.Discard, tc)
			return
		}
		handle(tc)
	})
}

// RoundTrip connects to addr (over TLS with cfg, or in plain TCP when cfg
// is nil), writes msg and reads as many bytes back.
func RoundTrip(addr string, cfg *tls.Config, msg string) (string, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	var c net.Conn
	var err error
	if cfg != nil {
		c, err = tls.DialWithDialer(d, "tcp", addr, cfg)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	n, err := io.ReadFull(c, buf)
	return string(buf[:n]), err
}

// stopTimeout bounds how long a server started by Run may take to return
// once its context is cancelled.
const stopTimeout = 30 * time.Second

// Server is a server started by Run.
type Server struct {
	// Addr is the address it listens on.
	Addr string

	cancel  context.CancelFunc
	done    chan error
	mu      sync.Mutex
	stopped bool
	err     error
}

// Run runs serve (a proxy's Serve, say) on a fresh loopback listener until
// Stop or the end of the test, when it fails t if serve returned an error
// other than net.ErrClosed or took longer than 30s to return.
func Run(t testing.TB, serve func(context.Context, net.Listener) error) *Server {
	t.Helper()
	ln := Listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{Addr: ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- serve(ctx, ln) }()
	t.Cleanup(func() {
		s.mu.Lock()
		stopped := s.stopped
		s.mu.Unlock()
		if stopped {
			return
		}
		if err := s.Stop(t); err != nil {
			t.Errorf("testnet: the server on %s: %v", s.Addr, err)
		}
	})
	return s
}

// Stop cancels the server's context and returns what serve returned (nil
// for net.ErrClosed). Calling it again returns the same.
func (s *Server) Stop(t testing.TB) error {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return s.err
	}
	s.stopped = true
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil && !errors.Is(err, net.ErrClosed) {
			s.err = err
		}
	case <-time.After(stopTimeout):
		t.Fatalf("testnet: the server on %s did not return %s after its context was cancelled", s.Addr, stopTimeout)
	}
	return s.err
}

// ServeHTTPS runs an HTTPS server with cfg and h on loopback until the end
// of the test and returns its URL ("https://127.0.0.1:PORT").
func ServeHTTPS(t testing.TB, cfg *tls.Config, h http.Handler) string {
	t.Helper()
	ln := Listen(t)
	srv := &http.Server{Handler: h, TLSConfig: cfg, ReadHeaderTimeout: handshakeTimeout}
	done := make(chan struct{})
	go func() { defer close(done); srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { srv.Close(); <-done })
	return "https://" + ln.Addr().String()
}

// WaitListening waits until addr accepts TCP connections, as a server a
// test started in another process does once it is up. If it never does,
// the test fails with the last dial error and what detail returns (the
// process's output, say); detail may be nil.
func WaitListening(t testing.TB, addr string, detail func() string) {
	t.Helper()
	testwait.EventuallyNil(t, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if detail != nil {
			return detailedError{err, detail}
		}
		return err
	}, addr+" to accept connections")
}

// detailedError adds detail to err when it is printed, and only then: the
// detail (a running process's output) is not read while the test polls.
type detailedError struct {
	err    error
	detail func() string
}

func (e detailedError) Error() string { return e.err.Error() + "\n" + e.detail() }

// FullBacklog returns the address of a listening socket (backlog 0) that
// never accepts and whose accept queue is already full: Linux drops the
// SYNs of further connections, so they time out. It skips the test when
// the kernel does not behave so (the queue would not fill).
func FullBacklog(t testing.TB) string {
	t.Helper()
	_, addr, _ := FullQueue(t)
	return addr
}

// FullQueue is FullBacklog's socket as a listener, which accepts when the
// test calls Accept: first the connections that fill its queue (their
// local addresses are fillers' keys), then the ones whose SYNs it dropped
// (Linux sends them again after its retransmission timeout, 1 s).
func FullQueue(t testing.TB) (ln net.Listener, addr string, fillers map[string]bool) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("testnet: %v", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		t.Fatalf("testnet: %v", err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		syscall.Close(fd)
		t.Fatalf("testnet: %v", err)
	}
	f := os.NewFile(uintptr(fd), "full-queue")
	ln, err = net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatalf("testnet: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	addr = ln.Addr().String()
	fillers = map[string]bool{}
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return ln, addr, fillers
		}
		if err != nil {
			t.Fatalf("testnet: filling the accept queue: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		fillers[c.LocalAddr().String()] = true
	}
	t.Skip("the kernel keeps accepting connections on a listener with backlog 0: a TCP connect timeout cannot be produced on loopback here")
	return nil, "", nil
}
