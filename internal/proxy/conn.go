package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mutual-tls/mutual/tlsconfig"
)

// Limits bound a proxy's resources. Zero values mean the defaults.
type Limits struct {
	// HandshakeTimeout bounds the TLS handshake; default 10s.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection with no traffic either way; default 5m.
	IdleTimeout time.Duration
	// MaxConnections caps open connections; past it new ones are closed at
	// once. Default 10000.
	MaxConnections int
	// DrainTimeout is how long shutdown waits for live connections; default 30s.
	DrainTimeout time.Duration
	// DialTimeout bounds connecting to the target; default 5s.
	DialTimeout time.Duration
	// HalfCloseTimeout closes a tcp-mode connection when one side has
	// finished sending (EOF) and nothing has moved either way for this
	// long, so that a client that closed and left does not stay counted
	// against MaxConnections while a silent service holds the other leg;
	// default 30s (never longer than IdleTimeout).
	HalfCloseTimeout time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.HandshakeTimeout <= 0 {
		l.HandshakeTimeout = 10 * time.Second
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = 5 * time.Minute
	}
	if l.MaxConnections <= 0 {
		l.MaxConnections = 10000
	}
	if l.DrainTimeout <= 0 {
		l.DrainTimeout = 30 * time.Second
	}
	if l.DialTimeout <= 0 {
		l.DialTimeout = 5 * time.Second
	}
	if l.HalfCloseTimeout <= 0 {
		l.HalfCloseTimeout = 30 * time.Second
	}
	return l
}

// reason turns a handshake failure into a short phrase for logs and metric
// labels, and a sentence for people.
func reason(err error) (label, words string) {
	var pe *tlsconfig.PeerError
	var re tls.RecordHeaderError
	var ae tls.AlertError
	var ne net.Error
	switch {
	case errors.As(err, &pe):
		return pe.Reason.String(), pe.Error()
	case errors.As(err, &re):
		return "not TLS", "the client did not speak TLS (first bytes were not a TLS handshake)"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "handshake timeout", "the client did not finish the TLS handshake in time"
	case errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "unexpected"):
		return "closed before TLS", "the client closed the connection before sending anything (a probe or a port check)"
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.ErrUnexpectedEOF):
		return "client went away", "the client closed the connection during the handshake"
	case errors.As(err, &ae):
		return "alert from peer", "the peer aborted the handshake: " + err.Error()
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "no application protocol"), strings.Contains(msg, "protocol version"), strings.Contains(msg, "no cipher suite"), strings.Contains(msg, "unsupported versions"):
		return "protocol mismatch", "no TLS version or cipher suite in common: " + msg
	case strings.Contains(msg, "client didn't provide a certificate"), strings.Contains(msg, "certificate required"):
		return tlsconfig.ReasonNoCertificate.String(), "the client presented no certificate (strict mode requires one)"
	}
	return "handshake error", msg
}

// pipe relays bytes both ways between a and b until both directions end,
// respecting half-close, and closes both. It returns the bytes copied a→b
// and b→a.
//
// A direction that ends with anything but a clean EOF (a reset, a closed
// connection, a failed write) closes both legs at once: the other side
// would otherwise wait on a peer that will never speak again. No byte
// moving either way for lim.IdleTimeout closes the pair; once one side has
// finished sending (half-close), lim.HalfCloseTimeout of silence does.
// An idle pair holds no relay buffer on its plaintext side and a 1 KiB one
// on its TLS side.
func pipe(a, b net.Conn, lim Limits) (ab, ba int64) {
	var last atomic.Int64
	var half atomic.Bool
	last.Store(time.Now().UnixNano())
	limit := func() time.Duration {
		if half.Load() && lim.HalfCloseTimeout > 0 && lim.HalfCloseTimeout < lim.IdleTimeout {
			return lim.HalfCloseTimeout
		}
		return lim.IdleTimeout
	}
	var mu sync.Mutex
	closed := false
	mu.Lock()
	var timer *time.Timer
	timer = time.AfterFunc(lim.IdleTimeout, func() {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			return
		}
		l := limit()
		since := time.Since(time.Unix(0, last.Load()))
		if since >= l {
			a.Close()
			b.Close()
			return
		}
		timer.Reset(l - since)
	})
	mu.Unlock()
	ended := func(clean bool) {
		if !clean {
			a.Close()
			b.Close()
			return
		}
		half.Store(true)
		mu.Lock()
		if !closed {
			// Measure the silence against the half-close bound from now on.
			timer.Reset(0)
		}
		mu.Unlock()
	}
	done := make(chan struct{})
	go func() {
		var clean bool
		ba, clean = copyHalf(a, b, &last)
		ended(clean)
		close(done)
	}()
	var clean bool
	ab, clean = copyHalf(b, a, &last)
	ended(clean)
	<-done
	mu.Lock()
	closed = true
	timer.Stop()
	mu.Unlock()
	a.Close()
	b.Close()
	return ab, ba
}

// bufPool holds relay buffers; a buffer is taken only while bytes flow.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

const maxRecord = 16 << 10

// copyHalf copies src to dst until EOF, then half-closes dst's write side
// and reports clean. Any other end (a read error, a failed write) reports
// !clean and leaves closing to the caller.
//
// A plain TCP source is waited on without a buffer, then read into a pooled
// one. A TLS source (which may hold decrypted bytes already) is read into a
// 1 KiB buffer while idle; when that fills, the rest of the record is read
// into a pooled buffer behind it and the whole is written at once.
func copyHalf(dst, src net.Conn, last *atomic.Int64) (n int64, clean bool) {
	plain := readableWaiter(src)
	var small []byte
	big := plain != nil
	for {
		var bp *[]byte
		var buf []byte
		if plain != nil {
			plain()
		}
		if big {
			bp = bufPool.Get().(*[]byte)
			buf = *bp
		} else {
			if small == nil {
				small = make([]byte, 1024)
			}
			buf = small
		}
		k, err := src.Read(buf)
		if plain == nil && !big && k == len(small) && err == nil {
			// More of this record is waiting inside crypto/tls: read it
			// behind what we have, and write once.
			bp = bufPool.Get().(*[]byte)
			buf = *bp
			copy(buf, small)
			var k2 int
			k2, err = src.Read(buf[len(small):])
			k += k2
		}
		if k > 0 {
			last.Store(time.Now().UnixNano())
			w, werr := dst.Write(buf[:k])
			n += int64(w)
			if werr != nil {
				if bp != nil {
					bufPool.Put(bp)
				}
				return n, false
			}
		}
		if bp != nil {
			bufPool.Put(bp)
		}
		if err != nil {
			if err != io.EOF {
				return n, false
			}
			closeWrite(dst)
			return n, true
		}
		if plain == nil {
			// TLS: a full record means more is likely buffered inside
			// crypto/tls; otherwise go back to the small buffer before
			// blocking.
			big = k >= maxRecord
		}
	}
}

// readableWaiter returns a function that blocks until a plain TCP
// connection has bytes (or EOF) without holding a buffer, or nil for
// connections that may buffer data internally (TLS).
func readableWaiter(c net.Conn) func() {
	if sc, ok := c.(*sniffedConn); ok {
		inner := readableWaiter(sc.Conn)
		if inner == nil {
			return nil
		}
		return func() {
			if sc.r.Buffered() == 0 {
				inner()
			}
		}
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return func() {
		var one [1]byte
		rc.Read(func(fd uintptr) bool {
			// Peek without consuming: data, EOF or an error all mean "go
			// read"; only EAGAIN means wait for the poller.
			_, _, err := syscall.Recvfrom(int(fd), one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			return err != syscall.EAGAIN && err != syscall.EINTR
		})
	}
}

func closeWrite(c net.Conn) {
	switch c := c.(type) {
	case *tls.Conn:
		c.CloseWrite()
	case *net.TCPConn:
		c.CloseWrite()
	case *sniffedConn:
		closeWrite(c.Conn)
	case *replayConn:
		closeWrite(c.Conn)
	default:
		c.Close()
	}
}

// sniffedConn replays the bytes read to tell TLS from plaintext.
type sniffedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *sniffedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// sniff peeks at the first byte: 0x16 starts a TLS handshake record.
func sniff(c net.Conn, timeout time.Duration) (net.Conn, bool, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	r := bufio.NewReaderSize(c, 16)
	b, err := r.Peek(1)
	c.SetReadDeadline(time.Time{})
	if err != nil {
		return nil, false, err
	}
	return &sniffedConn{Conn: c, r: r}, b[0] == 0x16, nil
}

func peerString(c net.Conn) string { return fmt.Sprint(c.RemoteAddr()) }
