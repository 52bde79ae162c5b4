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
// passing on the first direction's end as a half-close, and closes both.
// It returns the bytes copied a→b and b→a. See relayPipe.
func pipe(a, b net.Conn, lim Limits) (ab, ba int64) {
	done := make(chan struct{})
	newRelayPipe(a, b, lim, nil).run(func(x, y int64) {
		ab, ba = x, y
		close(done)
	})
	<-done
	return ab, ba
}

// relayPipe relays bytes both ways between a and b until both directions
// end, then closes both: the first direction to end cleanly half-closes
// its destination's write side (the other still runs); the last one
// closes both legs without a half-close of its own.
//
// A direction that ends with anything but a clean EOF (a reset, a closed
// connection, a failed write) closes both legs at once: the other side
// would otherwise wait on a peer that will never speak again. No byte
// moving either way for lim.IdleTimeout closes the pair; once one side has
// finished sending (half-close), lim.HalfCloseTimeout of silence does.
// An idle pair holds no relay buffer; with a parker, a pair silent for
// parkDelay holds no goroutine either: each direction hands its socket to
// the parker and ends, and the parker starts it again when bytes (or an
// end) arrive.
type relayPipe struct {
	a, b  net.Conn
	lim   Limits
	pk    *parker
	last  atomic.Int64 // when a byte last moved, UnixNano
	half  atomic.Bool  // one direction has ended cleanly
	left  atomic.Int32 // directions still running or parked
	dirs  [2]*relayHalf
	done  func(ab, ba int64)
	mu    sync.Mutex
	timer *time.Timer
	// closed is set once both directions have ended.
	closed bool
	// parkAsked is the value of last when the directions were last asked
	// to park: they are asked once per silence.
	parkAsked int64
}

// newRelayPipe prepares a relay of a and b; run starts it. pk may be nil:
// the directions then wait in their goroutines however long a and b stay
// silent.
func newRelayPipe(a, b net.Conn, lim Limits, pk *parker) *relayPipe {
	p := &relayPipe{a: a, b: b, lim: lim, pk: pk}
	p.dirs[0] = newRelayHalf(p, b, a)
	p.dirs[1] = newRelayHalf(p, a, b)
	return p
}

// closeBoth closes both legs and starts any parked direction, which then
// sees the closed connection and ends.
func (p *relayPipe) closeBoth() {
	p.a.Close()
	p.b.Close()
	p.dirs[0].wake()
	p.dirs[1].wake()
}

// run relays a→b in this goroutine and b→a in a new one, and calls done
// with the byte counts once both have ended and both legs are closed. It
// returns when the a→b direction has ended or parked.
func (p *relayPipe) run(done func(ab, ba int64)) {
	p.done = done
	p.left.Store(2)
	p.last.Store(time.Now().UnixNano())
	p.mu.Lock()
	p.timer = time.AfterFunc(p.nextTick(time.Now().UnixNano(), 0), p.tick)
	p.mu.Unlock()
	go p.dirs[1].run()
	p.dirs[0].run()
}

// limit is the silence that closes the pair now.
func (p *relayPipe) limit() time.Duration {
	if p.half.Load() && p.lim.HalfCloseTimeout > 0 && p.lim.HalfCloseTimeout < p.lim.IdleTimeout {
		return p.lim.HalfCloseTimeout
	}
	return p.lim.IdleTimeout
}

// nextTick is when the watchdog looks again, given the last byte and the
// silence so far: at the idle limit, or sooner to ask the directions to
// park.
func (p *relayPipe) nextTick(last int64, since time.Duration) time.Duration {
	next := p.limit() - since
	if p.pk != nil && p.pk.usable() && last != p.parkAsked && parkDelay-since < next {
		next = max(parkDelay-since, 0)
	}
	return next
}

// tick is the watchdog: it closes a silent pair and asks a quiet one's
// directions to park.
func (p *relayPipe) tick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	last := p.last.Load()
	since := time.Since(time.Unix(0, last))
	if since >= p.limit() {
		p.closeBoth()
		return
	}
	if p.pk != nil && p.pk.usable() && last != p.parkAsked && since >= parkDelay {
		p.parkAsked = last
		p.dirs[0].askToPark()
		p.dirs[1].askToPark()
	}
	p.timer.Reset(p.nextTick(last, since))
}

// resumed restarts the watchdog's count towards parking after a parked
// direction woke.
func (p *relayPipe) resumed() {
	p.mu.Lock()
	if !p.closed {
		// Asked anew even when the wake carried no data (half a TLS
		// record, an empty one) and the silence did not restart.
		p.parkAsked = -1
		p.timer.Reset(min(parkDelay, p.limit()))
	}
	p.mu.Unlock()
}

// ended records that one direction has ended, cleanly (EOF) or not, and
// finishes the pair after the second.
func (p *relayPipe) ended(clean bool) {
	if !clean {
		p.closeBoth()
	} else {
		p.half.Store(true)
		p.mu.Lock()
		if !p.closed {
			// Measure the silence against the half-close bound from now on.
			p.timer.Reset(0)
		}
		p.mu.Unlock()
	}
	if p.left.Add(-1) > 0 {
		return
	}
	p.mu.Lock()
	p.closed = true
	p.timer.Stop()
	p.mu.Unlock()
	p.a.Close()
	p.b.Close()
	p.done(p.dirs[0].n, p.dirs[1].n)
}

// bufPool holds relay buffers; a buffer is taken only while bytes flow.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

const maxRecord = 16 << 10

// The states of a relayHalf.
const (
	halfRunning int32 = iota // a goroutine relays (or waits on the socket)
	halfPending              // running, and the parker saw the socket ready
	halfParked               // no goroutine: the parker waits for the socket
	halfDone                 // ended
)

// relayHalf is one direction of a relayPipe: src copied to dst.
type relayHalf struct {
	p        *relayPipe
	dst, src net.Conn
	hs       halfSource
	// sock is src's socket for the parker; nil when src cannot park.
	sock syscall.RawConn
	n    int64
	// state is halfRunning, halfPending, halfParked or halfDone.
	state atomic.Int32
	// askPark is set, with a read deadline in the past, to make the
	// direction's wait end and park.
	askPark atomic.Bool
	// token names the direction to the parker (0: never parked); armed
	// says its socket is registered there. Only the running goroutine
	// uses them.
	token uint64
	armed bool
}

func newRelayHalf(p *relayPipe, dst, src net.Conn) *relayHalf {
	h := &relayHalf{p: p, dst: dst, src: src, hs: halfSource{src: src, tr: newTLSReader(src), plain: readableWaiter(src)}}
	if p.pk != nil && (h.hs.tr != nil || h.hs.plain != nil) {
		h.sock = socketOf(src)
	}
	return h
}

// run copies src to dst until EOF. At EOF it half-closes dst's write side
// if the other direction still runs; if it is the last direction, the
// pair closes both legs instead. Any other end (a read error, a failed
// write) closes both legs. It returns early when the direction parks.
func (h *relayHalf) run() {
	for {
		bp, buf, k, err := h.hs.read()
		if k > 0 {
			h.p.last.Store(time.Now().UnixNano())
			w, werr := h.dst.Write(buf[:k])
			h.n += int64(w)
			if werr != nil {
				err = werr
			}
		}
		if bp != nil {
			bufPool.Put(bp)
		}
		if err == nil {
			continue
		}
		// tcp mode sets no read deadline of its own on a parkable source:
		// a timeout there is always the parker's ask, even when that ask
		// crossed park() clearing an earlier one (askPark then reads false
		// while the deadline has passed); never a reason to end.
		if h.sock != nil && isTimeout(err) {
			if h.park() {
				return
			}
			continue
		}
		clean := err == io.EOF
		// Tell dst that no more comes while the other direction still
		// runs; after it, the pair closes both legs at once, and the close
		// says as much (both directions read to EOF: nothing unread turns
		// it into a reset) for a system call less.
		if clean && h.p.left.Load() > 1 {
			closeWrite(h.dst)
		}
		h.state.Store(halfDone)
		if h.token != 0 {
			h.p.pk.forget(h)
		}
		h.p.ended(clean)
		return
	}
}

// askToPark makes a waiting direction end its wait and park.
func (h *relayHalf) askToPark() {
	if h.sock == nil || h.state.Load() != halfRunning {
		return
	}
	h.askPark.Store(true)
	h.src.SetReadDeadline(longAgo)
}

// longAgo is a read deadline that has passed.
var longAgo = time.Unix(1, 0)

// park hands the direction to the parker; true means this goroutine is
// to end. False means run on: the parker failed, bytes arrived meanwhile
// (the direction asks itself to park again once it has found none), or
// src holds bytes the parker cannot see.
func (h *relayHalf) park() bool {
	h.askPark.Store(false)
	h.src.SetReadDeadline(time.Time{})
	if sniffedBytes(h.src) {
		return false
	}
	if err := h.p.pk.arm(h); err != nil {
		return false
	}
	if h.state.CompareAndSwap(halfRunning, halfParked) {
		h.p.pk.parked.Add(1)
		return true
	}
	h.state.Store(halfRunning)
	h.askPark.Store(true)
	h.src.SetReadDeadline(longAgo)
	return false
}

// wake starts a parked direction in a new goroutine; a running one is
// told that its socket was seen ready.
func (h *relayHalf) wake() {
	for {
		switch h.state.Load() {
		case halfParked:
			if h.state.CompareAndSwap(halfParked, halfRunning) {
				h.p.pk.parked.Add(-1)
				h.p.pk.woken.Add(1)
				// Not here: the watchdog wakes directions holding p.mu.
				go func() {
					h.p.resumed()
					h.run()
				}()
				return
			}
		case halfRunning:
			if h.state.CompareAndSwap(halfRunning, halfPending) {
				return
			}
		default:
			return
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// socketOf returns the TCP socket under c (TLS, a sniffed or polled
// connection), or nil.
func socketOf(c net.Conn) syscall.RawConn {
	tcp, _ := under(c)
	if tcp == nil {
		return nil
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// sniffedBytes reports whether c holds bytes read off its socket while
// sniffing and not yet consumed: the socket alone does not show them.
func sniffedBytes(c net.Conn) bool {
	_, sc := under(c)
	return sc != nil && sc.r.Buffered() > 0
}

// under unwraps c (TLS, polled, sniffed) down to its TCP connection, and
// the sniffedConn on the way, if any.
func under(c net.Conn) (*net.TCPConn, *sniffedConn) {
	var sniffed *sniffedConn
	for {
		switch cc := c.(type) {
		case *tls.Conn:
			c = cc.NetConn()
		case *pollConn:
			c = cc.Conn
		case *sniffedConn:
			sniffed, c = cc, cc.Conn
		case *net.TCPConn:
			return cc, sniffed
		default:
			return nil, sniffed
		}
	}
}

// halfSource reads one direction of a relay. An idle source is waited on
// without a buffer and in a shallow stack (readableWaiter, tlsReader),
// then read into a pooled buffer. After a full TLS record, more is likely
// buffered inside crypto/tls: the next read goes straight into a pooled
// buffer, with every record already held behind the first.
type halfSource struct {
	src   net.Conn
	tr    *tlsReader
	plain func() error
	small []byte
	big   bool
}

// read returns the next bytes in buf[:k] and the pooled buffer holding
// them, if any, for the caller to put back.
func (h *halfSource) read() (bp *[]byte, buf []byte, k int, err error) {
	switch {
	case h.plain != nil:
		if err := h.plain(); err != nil {
			return nil, nil, 0, err
		}
		bp = bufPool.Get().(*[]byte)
		k, err = h.src.Read(*bp)
		return bp, *bp, k, err
	case h.tr != nil && !h.big:
		bp = bufPool.Get().(*[]byte)
		if k, err = h.tr.poll(*bp); k == 0 && err == nil {
			bufPool.Put(bp)
			if err := h.tr.readable(); err != nil {
				return nil, nil, 0, err
			}
			bp = bufPool.Get().(*[]byte)
			k, err = h.src.Read(*bp)
		}
	case h.big:
		bp = bufPool.Get().(*[]byte)
		buf = *bp
		k, err = h.src.Read(buf)
		// Records that crypto/tls already holds go behind it: one write
		// for them all.
		for h.tr != nil && err == nil && k >= maxRecord && len(buf)-k >= maxRecord {
			var more int
			if more, err = h.tr.poll(buf[k:]); more == 0 {
				break
			}
			k += more
		}
	default:
		// A TLS source whose socket cannot be waited on (the outbound
		// proxy's): a 1 KiB buffer while idle, the rest of the record
		// behind it.
		if h.small == nil {
			h.small = make([]byte, 1024)
		}
		k, err = h.src.Read(h.small)
		if k < len(h.small) || err != nil {
			h.big = false
			return nil, h.small, k, err
		}
		bp = bufPool.Get().(*[]byte)
		copy(*bp, h.small)
		var k2 int
		k2, err = h.src.Read((*bp)[k:])
		k += k2
	}
	// TLS: a full record means more is likely buffered inside crypto/tls;
	// otherwise go back to waiting without a buffer.
	h.big = k >= maxRecord
	return bp, *bp, k, err
}

// pollConn is the socket under a server-side TLS connection. While hold is
// set its Read fails at once (errWouldBlock, which crypto/tls takes for a
// passing error): a TLS Read then returns only what crypto/tls already
// holds.
type pollConn struct {
	net.Conn
	hold atomic.Bool
}

func (c *pollConn) Read(b []byte) (int, error) {
	if c.hold.Load() {
		return 0, errWouldBlock
	}
	return c.Conn.Read(b)
}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "no bytes held: wait for the socket" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

var errWouldBlock net.Error = wouldBlock{}

// tlsReader waits on an idle server-side TLS connection the way
// readableWaiter waits on a plain one: without a buffer and in a shallow
// stack (a goroutine blocked inside crypto/tls's Read keeps 8 KiB of
// stack), with no more system calls than a blocking Read.
type tlsReader struct {
	tc *tls.Conn
	pc *pollConn
	// readable blocks until the socket has bytes, or its read deadline
	// passes (the next Read then fails); it returns a reset.
	readable func() error
}

// newTLSReader returns a tlsReader for c, or nil when c is not TLS over a
// pollConn on a socket.
func newTLSReader(c net.Conn) *tlsReader {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil
	}
	pc, ok := tc.NetConn().(*pollConn)
	if !ok {
		return nil
	}
	w := readableWaiter(pc.Conn)
	if w == nil {
		return nil
	}
	return &tlsReader{tc: tc, pc: pc, readable: w}
}

// poll reads what crypto/tls already holds (decrypted bytes, a complete
// record) without touching the socket: (0, nil) means nothing.
func (r *tlsReader) poll(b []byte) (int, error) {
	r.pc.hold.Store(true)
	n, err := r.tc.Read(b)
	r.pc.hold.Store(false)
	if n == 0 && errors.Is(err, errWouldBlock) {
		return 0, nil
	}
	return n, err
}

// readableWaiter returns a function that blocks until a plain TCP
// connection has bytes (or EOF) without holding a buffer, or nil for
// connections that may buffer data internally (TLS). It returns the
// socket's error (a reset), which the peek consumed: a Read after it would
// see EOF instead.
func readableWaiter(c net.Conn) func() error {
	if sc, ok := c.(*sniffedConn); ok {
		inner := readableWaiter(sc.Conn)
		if inner == nil {
			return nil
		}
		return func() error {
			if sc.r.Buffered() == 0 {
				return inner()
			}
			return nil
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
	return func() error {
		var one [1]byte
		var perr error
		woken := false
		rc.Read(func(fd uintptr) bool {
			// Once the poller has woken us, go read: peeking again would
			// cost a system call more than a blocking Read (a spurious
			// wake-up only means that Read waits).
			if woken {
				return true
			}
			woken = true
			// Peek without consuming: data, EOF or an error all mean "go
			// read"; only EAGAIN means wait for the poller.
			_, _, err := syscall.Recvfrom(int(fd), one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			if err == syscall.EAGAIN {
				return false
			}
			if err != nil && err != syscall.EINTR {
				perr = &net.OpError{Op: "read", Net: "tcp", Source: tc.LocalAddr(), Addr: tc.RemoteAddr(), Err: os.NewSyscallError("recvfrom", err)}
			}
			return true
		})
		return perr
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
	case *pollConn:
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

func peerString(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil {
		return a.String()
	}
	return fmt.Sprint(nil)
}
