package proxy

// The proxy's own path for HTTP/1.1 keep-alive requests. http.Server and
// httputil.ReverseProxy cost most of the proxy's CPU per request (a
// background read, a context and a header clone per request, two
// goroutines per connection to the service). This path reads each request
// with net/http's parser on a buffer it owns, forwards it on a pooled
// keep-alive connection to the service, and copies the answer back. It
// takes only requests it can judge completely: anything else (HTTP/2,
// Upgrade, CONNECT, Expect, chunked or oversized requests, HTTP/1.0,
// absolute-form targets, obs-fold, bare LF, control bytes, parse errors)
// goes, with the connection, to http.Server and the reverse proxy, which
// see the bytes exactly as the client sent them (replayConn).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

const (
	// h1BufSize bounds the request head this path takes; a larger one
	// goes to http.Server, which allows h2guard.MaxHeaderBytes.
	h1BufSize = 4 << 10
	// maxIdleBackends is how many idle connections to the service are kept.
	maxIdleBackends = 256
	// backendIdleTimeout closes a pooled connection to the service unused
	// for this long (http.Transport's IdleConnTimeout before).
	backendIdleTimeout = 90 * time.Second
	// discardLimit is how much of a refused request's body is read and
	// dropped to keep the connection; past it the connection is closed.
	discardLimit = 256 << 10
	// max1xx bounds the informational responses relayed for one request.
	max1xx = 5
	// minBodyRate is the average rate, in bytes a second, at which a
	// request body must arrive after its first idle timeout (Apache's
	// mod_reqtimeout MinRate). Each read must also make progress within
	// the idle timeout; without a floor on the rate, a client sending a
	// byte now and then would hold a connection to the service for as
	// long as its Content-Length allows.
	minBodyRate = 500
)

// bodyDeadline is the latest a request body that began arriving at start
// may still be read, with got bytes of it received and limit the idle
// timeout: limit, plus a second for every minBodyRate bytes.
func bodyDeadline(start time.Time, limit time.Duration, got int64) time.Time {
	return start.Add(limit + time.Duration(min(got, 1<<40))*(time.Second/minBodyRate))
}

// Connection states, for the drain: an idle connection is closed at once,
// a busy one after its response.
const (
	h1Idle int32 = iota
	h1Busy
	h1Closed
)

// h1Conn is one client connection served by the HTTP/1.1 path. While it
// waits for a request it holds no buffer: the first byte is read alone
// (crypto/tls keeps the rest of its record), then a pooled reader and
// writer serve the request and go back to the pool.
type h1Conn struct {
	httpConn
	lc     *liveConn
	remote string
	state  atomic.Int32
	// target is the connection to the service a request is using; the
	// connection's close (revocation, drain) closes it too.
	target   atomic.Pointer[backendConn]
	first    [1]byte
	hasFirst bool
	// tr waits for the next request without crypto/tls's deep stack; nil
	// when the connection is not TLS over a socket.
	tr *tlsReader
	// dl bounds every wait on the client: for the next request (idle), for
	// each read of a body and each write of a response (progress).
	dl progress
	// inHead is set while the request head is read: its reads are bounded
	// by the head's deadline, not extended by progress.
	inHead bool
	// inBody is set while a request body is forwarded; bodyStart is when
	// the proxy began reading it (its first read: the dial and the head's
	// write do not count), moved on by the time it was blocked writing it
	// to the service (see bodyPaused); bodyGot is how much of it was
	// received. Its reads are bounded by bodyDeadline too.
	inBody    bool
	bodyStart time.Time
	bodyGot   int64
}

// progress keeps a connection's read and write deadlines at least d after
// each use, re-arming one only when it falls short (then d/8 further), so
// that a busy connection sets a deadline once every d/8 rather than on
// every read and write. A peer that makes no progress for d (up to 9/8 d)
// gets a timeout; one that does is never cut.
type progress struct {
	c           net.Conn
	d           time.Duration
	read, write time.Time
	// other: the read deadline is one setRead chose (a request head's),
	// replaced at the next extendRead whether sooner or later.
	other bool
}

// extendRead makes the read deadline at least now+d (and no more than
// 9/8 d after now when setRead chose it).
func (p *progress) extendRead(now time.Time) {
	if p.other || p.read.Before(now.Add(p.d)) {
		p.read = now.Add(p.d + p.d/8)
		p.other = false
		p.c.SetReadDeadline(p.read)
	}
}

// extendReadBefore is extendRead with the deadline no later than limit.
// A peer the limit binds (a body arriving too slowly) moves the deadline
// on each read; others pay as with extendRead.
func (p *progress) extendReadBefore(now, limit time.Time) {
	want := now.Add(p.d)
	if limit.Before(want) {
		want = limit
	}
	if p.other || p.read.Before(want) || p.read.After(limit) {
		p.read = now.Add(p.d + p.d/8)
		if limit.Before(p.read) {
			p.read = limit
		}
		p.other = false
		p.c.SetReadDeadline(p.read)
	}
}

// setRead sets the read deadline to t, sooner or later than it was.
func (p *progress) setRead(t time.Time) {
	p.read = t
	p.other = true
	p.c.SetReadDeadline(t)
}

// extendWrite makes the write deadline at least now+d.
func (p *progress) extendWrite(now time.Time) {
	if p.write.Before(now.Add(p.d)) {
		p.write = now.Add(p.d + p.d/8)
		p.c.SetWriteDeadline(p.write)
	}
}

// readFirst waits, for the idle timeout at most, for the first byte of the
// next request.
func (c *h1Conn) readFirst() error {
	c.dl.extendRead(time.Now())
	if c.tr != nil {
		if n, err := c.tr.poll(c.first[:]); n > 0 || err != nil {
			return err
		}
		if err := c.tr.readable(); err != nil {
			return err
		}
	}
	n, err := c.conn.Read(c.first[:])
	if err == nil && n == 0 {
		err = io.ErrNoProgress
	}
	return err
}

// Read reads the client's bytes, the byte read while idle first, with
// what crypto/tls holds of its record: usually the whole request head,
// which then needs no wait (nor deadline).
func (c *h1Conn) Read(b []byte) (int, error) {
	if c.hasFirst && len(b) > 0 {
		c.hasFirst = false
		b[0] = c.first[0]
		n := 1
		if c.tr != nil {
			k, _ := c.tr.poll(b[1:]) // an error recurs at the next Read
			n += k
		}
		return n, nil
	}
	switch {
	case c.inHead:
	case c.inBody:
		now := time.Now()
		if c.bodyStart.IsZero() {
			c.bodyStart = now
		}
		c.dl.extendReadBefore(now, bodyDeadline(c.bodyStart, c.dl.d, c.bodyGot))
		n, err := c.conn.Read(b)
		c.bodyGot += int64(n)
		return n, err
	default:
		c.dl.extendRead(time.Now())
	}
	return c.conn.Read(b)
}

// Write writes to the client, which must take the bytes within the idle
// timeout.
func (c *h1Conn) Write(b []byte) (int, error) {
	c.dl.extendWrite(time.Now())
	return c.conn.Write(b)
}

// closeTarget closes the connection to the service in use, if any: a leg
// of the client connection.
func (c *h1Conn) closeTarget() {
	if bc := c.target.Swap(nil); bc != nil {
		bc.c.Close()
	}
}

// h1Bufs are what one request in flight needs, pooled.
type h1Bufs struct {
	r *bufio.Reader
	w *bufio.Writer
	// head is a copy of the request's head, for http.Server should the
	// request go there.
	head []byte
}

var h1Pool = sync.Pool{New: func() any {
	return &h1Bufs{r: bufio.NewReaderSize(nil, h1BufSize), w: bufio.NewWriterSize(nil, h1BufSize), head: make([]byte, 0, h1BufSize)}
}}

// wantsH1 reports whether a connection is served by the HTTP/1.1 path:
// every connection that did not negotiate HTTP/2.
func wantsH1(tc *tls.Conn) bool {
	return tc == nil || tc.ConnectionState().NegotiatedProtocol != "h2"
}

// startH1 serves a tracked, counted connection on the HTTP/1.1 path, in a
// goroutine of its own (the handshake's deep stack is not kept). handoff
// passes the connection to http.Server when a request needs it.
func (p *Inbound) startH1(ctx context.Context, relay net.Conn, tc *tls.Conn, lc *liveConn, handoff func(net.Conn) bool) {
	hc := &h1Conn{lc: lc, remote: relay.RemoteAddr().String()}
	hc.conn = relay
	hc.dl = progress{c: relay, d: p.cfg.Limits.IdleTimeout}
	if tc != nil {
		cs := tc.ConnectionState()
		hc.tls = &cs
		hc.tr = newTLSReader(relay)
	}
	lc.h1 = hc
	go p.serveH1(ctx, hc, handoff)
}

// serveH1 is the connection's loop: wait idle, then serve the requests
// that arrived.
func (p *Inbound) serveH1(ctx context.Context, hc *h1Conn, handoff func(net.Conn) bool) {
	handedOver := false
	defer func() {
		if !handedOver {
			hc.conn.Close()
			p.untrack(hc.conn)
			p.release()
			p.wg.Done()
		}
	}()
	if !hc.lc.attach(hc.closeTarget) {
		return
	}
	for ctx.Err() == nil {
		if err := hc.readFirst(); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				p.timedOut(hc, stageIdle, err)
			}
			return
		}
		if !hc.state.CompareAndSwap(h1Idle, h1Busy) {
			return
		}
		hc.hasFirst = true
		b := h1Pool.Get().(*h1Bufs)
		b.r.Reset(hc)
		b.w.Reset(hc)
		keep, replay := p.serveBuffered(ctx, hc, b)
		b.r.Reset(nil)
		b.w.Reset(nil)
		h1Pool.Put(b)
		if replay != nil {
			handedOver = p.handOver(hc, replay, handoff)
			return
		}
		if !keep {
			return
		}
		hc.state.Store(h1Idle)
	}
}

// serveBuffered serves requests while their bytes are already buffered
// (pipelining). It reports whether the connection stays open, or the
// connection to hand to http.Server.
func (p *Inbound) serveBuffered(ctx context.Context, hc *h1Conn, b *h1Bufs) (keep bool, replay net.Conn) {
	for {
		keep, replay = p.serveOne(ctx, hc, b)
		if !keep || replay != nil || b.r.Buffered() == 0 || ctx.Err() != nil {
			return keep, replay
		}
	}
}

// serveOne reads one request and answers it.
func (p *Inbound) serveOne(ctx context.Context, hc *h1Conn, b *h1Bufs) (keep bool, replay net.Conn) {
	// http.Server's ReadHeaderTimeout, when the head is not all here yet.
	hc.inHead = true
	n, err := hc.peekHead(b.r, p.cfg.Limits.HandshakeTimeout)
	hc.inHead = false
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			p.timedOut(hc, stageRequestHead, err)
		}
		return false, nil
	}
	if n == 0 {
		return false, hc.replay(b, nil)
	}
	head, _ := b.r.Peek(n)
	b.head = append(b.head[:0], head...)
	if !plainHead(b.head) {
		return false, hc.replay(b, nil)
	}
	buffered := b.r.Buffered()
	req, err := http.ReadRequest(b.r)
	if err != nil || !plainRequest(req) {
		// Replay exactly what the parser consumed (all the head, or the
		// part before an error), then what is still buffered.
		consumed := buffered - b.r.Buffered()
		if consumed > len(b.head) {
			return false, nil
		}
		return false, hc.replay(b, b.head[:consumed])
	}
	start := time.Now()
	// A body is read, and the response written, under the progress
	// deadlines (hc.Read, hc.Write): a long upload or stream is not cut.
	req.RemoteAddr = hc.remote
	req.TLS = hc.tls
	v := p.admitRequest(&hc.httpConn, req)
	if v.code != 0 {
		keep = p.writeRefusal(hc, b.w, req, v, true)
		p.finish(req, v.code, v.peer, v.outcome, v.reason, start)
		return keep, nil
	}
	code, keep := p.forwardH1(ctx, hc, b, req)
	p.finish(req, code, v.peer, "forwarded", "", start)
	return keep, nil
}

// peekHead waits until the request head (through its empty line) is
// buffered and returns its length, or 0 when it does not fit in the
// buffer or starts with an empty line: http.Server takes those. Before it
// first waits for bytes, it bounds the wait (and all the head's) with
// timeout; a head that came whole with its first byte sets no deadline.
func (hc *h1Conn) peekHead(r *bufio.Reader, timeout time.Duration) (n int, err error) {
	from := 0
	waited := false
	if r.Buffered() == 0 && !hc.hasFirst {
		hc.dl.setRead(time.Now().Add(timeout))
		waited = true
	}
	// The first byte, and what crypto/tls holds behind it.
	if _, err := r.Peek(1); err != nil {
		return 0, err
	}
	for {
		buf, _ := r.Peek(r.Buffered())
		if buf[0] == '\r' || buf[0] == '\n' {
			return 0, nil
		}
		if i := bytes.Index(buf[from:], []byte("\n\r\n")); i >= 0 {
			return from + i + 3, nil
		}
		if bytes.Contains(buf[from:], []byte("\n\n")) {
			return 0, nil // bare LF: http.Server's reading of it stands
		}
		if len(buf) == r.Size() {
			return 0, nil
		}
		from = max(len(buf)-2, 0)
		if !waited {
			hc.dl.setRead(time.Now().Add(timeout))
			waited = true
		}
		if _, err := r.Peek(len(buf) + 1); err != nil {
			return 0, err
		}
	}
}

// plainHead reports whether a request head has only visible ASCII, obs-text
// and tabs in its lines, every line ending in CRLF and no folded line:
// the bytes on which every HTTP/1.1 parser agrees.
func plainHead(h []byte) bool {
	for i, c := range h {
		switch {
		case c >= 0x20 && c != 0x7f, c == '\t':
		case c == '\r':
			if i+1 >= len(h) || h[i+1] != '\n' {
				return false
			}
		case c == '\n':
			if i == 0 || h[i-1] != '\r' {
				return false
			}
			if i+1 < len(h) && (h[i+1] == ' ' || h[i+1] == '\t') {
				return false // obs-fold
			}
		default:
			return false
		}
	}
	return true
}

// plainRequest reports whether this path forwards req itself: an HTTP/1.1
// request in origin form with a valid Host, a body of known length (no
// Transfer-Encoding), no protocol switch or Expect, and a query that the
// reverse proxy would forward unchanged.
func plainRequest(req *http.Request) bool {
	if req.ProtoMajor != 1 || req.ProtoMinor != 1 || req.Method == http.MethodConnect || req.Method == "PRI" {
		return false
	}
	if len(req.TransferEncoding) != 0 || req.ContentLength < 0 || req.Header["Transfer-Encoding"] != nil {
		return false
	}
	// ReadRequest refuses two Host lines and drops the one: an empty Host
	// (missing or blank) is for http.Server to judge.
	if req.Host == "" || !httpguts.ValidHostHeader(req.Host) {
		return false
	}
	if !strings.HasPrefix(req.RequestURI, "/") || req.URL.IsAbs() {
		return false
	}
	if req.Header["Upgrade"] != nil || req.Header["Expect"] != nil || !plainQuery(req.URL.RawQuery) {
		return false
	}
	return true
}

// plainQuery reports whether httputil.ReverseProxy forwards q unchanged (it
// re-encodes queries with ';' or a bad escape).
func plainQuery(q string) bool {
	for i := 0; i < len(q); i++ {
		switch q[i] {
		case ';':
			return false
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// hopHeaders are the hop-by-hop headers, in canonical form, removed in both
// directions as the reverse proxy does; both of the proxy's header paths
// (net/http's Header and the fast response head) read this one list.
var hopHeaders = [...]string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// isHopHeader reports whether the canonical key k is a hop-by-hop header.
func isHopHeader(k string) bool {
	for _, h := range hopHeaders {
		if k == h {
			return true
		}
	}
	return false
}

// isRequestOnlyDrop reports whether the proxy drops k from a request it
// forwards besides the hop-by-hop headers: it writes these itself.
func isRequestOnlyDrop(k string) bool {
	switch k {
	case "Content-Length", "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
		return true
	}
	return false
}

// removeHopByHop removes hop-by-hop headers and those named in Connection,
// and (request) the headers the proxy writes itself: one pass over the
// header's few keys.
func removeHopByHop(h http.Header, request bool) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				delete(h, textproto.CanonicalMIMEHeaderKey(sf))
			}
		}
	}
	for k := range h {
		if isHopHeader(k) || request && isRequestOnlyDrop(k) {
			delete(h, k)
		}
	}
}

// replay is the client connection for http.Server: the bytes this path
// read (the request's head when it was parsed, then what is buffered)
// come first.
func (hc *h1Conn) replay(b *h1Bufs, head []byte) net.Conn {
	rest, _ := b.r.Peek(b.r.Buffered())
	pending := make([]byte, 0, len(head)+len(rest))
	pending = append(append(pending, head...), rest...)
	return &replayConn{Conn: hc.conn, pending: pending, hc: &hc.httpConn, dl: progress{c: hc.conn, d: hc.dl.d}}
}

// replayConn is a client connection handed from the HTTP/1.1 path to
// http.Server, with the bytes already read.
type replayConn struct {
	net.Conn
	pending []byte
	hc      *httpConn
	// dl bounds each write to the client (http.Server without
	// WriteTimeout sets none), as on the HTTP/1.1 path.
	dl progress
}

// Write writes to the client, which must take the bytes within the idle
// timeout.
func (c *replayConn) Write(b []byte) (int, error) {
	c.dl.extendWrite(time.Now())
	return c.Conn.Write(b)
}

func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// handOver moves a connection to http.Server: it is tracked and counted
// under its new face until http.Server closes it.
func (p *Inbound) handOver(hc *h1Conn, rc net.Conn, handoff func(net.Conn) bool) bool {
	hc.conn.SetDeadline(time.Time{})
	p.mu.Lock()
	lc := p.conns[hc.conn]
	delete(p.conns, hc.conn)
	p.conns[rc] = lc
	p.mu.Unlock()
	hc.httpConn.conn = rc
	if handoff(rc) {
		return true
	}
	p.mu.Lock()
	delete(p.conns, rc)
	p.conns[hc.conn] = lc
	p.mu.Unlock()
	return false
}

// closeIdleH1 closes the HTTP/1.1 path's idle connections (the drain);
// busy ones close after their response.
func (p *Inbound) closeIdleH1() {
	p.mu.Lock()
	var idle []*h1Conn
	for _, lc := range p.conns {
		if hc := lc.h1; hc != nil && hc.state.CompareAndSwap(h1Idle, h1Closed) {
			idle = append(idle, hc)
		}
	}
	p.mu.Unlock()
	for _, hc := range idle {
		hc.lc.close()
	}
}

// writeRefusal answers a refused request as http.Error does and reports
// whether the connection stays open (its body, if any, read and dropped).
func (p *Inbound) writeRefusal(hc *h1Conn, w *bufio.Writer, req *http.Request, v verdict, canKeep bool) bool {
	keep := canKeep && !req.Close && req.ContentLength <= discardLimit
	writeStatus(w, v.code)
	w.WriteString("Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n")
	writeDate(w)
	w.WriteString("Content-Length: ")
	w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(len(v.msg)+1), 10))
	w.WriteString("\r\n")
	if !keep {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n")
	w.WriteString(v.msg)
	w.WriteString("\n")
	if w.Flush() != nil {
		return false
	}
	if keep && req.ContentLength > 0 {
		// Within the head's bound, not extended by each read: a refused
		// client trickling its body would otherwise hold the connection
		// for as long as it likes.
		hc.inHead = true
		hc.dl.setRead(time.Now().Add(p.cfg.Limits.HandshakeTimeout))
		_, err := io.CopyN(io.Discard, req.Body, req.ContentLength)
		hc.inHead = false
		if errors.Is(err, os.ErrDeadlineExceeded) {
			p.timedOut(hc, stageRequestBody, err)
		}
		keep = err == nil
	}
	return keep
}

func writeStatus(w *bufio.Writer, code int) {
	w.WriteString("HTTP/1.1 ")
	w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(code), 10))
	w.WriteByte(' ')
	if text := http.StatusText(code); text != "" {
		w.WriteString(text)
	} else {
		w.WriteString("status code ")
		w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(code), 10))
	}
	w.WriteString("\r\n")
}

func writeDate(w *bufio.Writer) {
	w.WriteString("Date: ")
	w.Write(time.Now().UTC().AppendFormat(w.AvailableBuffer(), http.TimeFormat))
	w.WriteString("\r\n")
}

func writeHeader(w *bufio.Writer, h http.Header) {
	for k, vv := range h {
		for _, v := range vv {
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(v)
			w.WriteString("\r\n")
		}
	}
}

// unreachableMsg is answered as the reverse proxy's ErrorHandler did.
const unreachableMsg = "mutual proxy: the service behind this proxy is unreachable"

// forwardH1 sends req to the service and relays its response. It returns
// the status for the log and whether the client connection stays open.
func (p *Inbound) forwardH1(ctx context.Context, hc *h1Conn, b *h1Bufs, req *http.Request) (int, bool) {
	te := httpguts.HeaderValuesContainsToken(req.Header["Te"], "trailers")
	h := req.Header
	// The identity header is the proxy's: a client naming it in
	// Connection must not remove it.
	xfcc := h[XFCCHeader]
	removeHopByHop(h, true)
	if xfcc != nil {
		h[XFCCHeader] = xfcc
	}
	if req.ContentLength > 0 {
		hc.inBody, hc.bodyStart, hc.bodyGot = true, time.Time{}, min(int64(b.r.Buffered()), req.ContentLength)
		defer func() { hc.inBody, hc.bodyStart = false, time.Time{} }()
	}
	stale := 0
	for attempt := 0; ; attempt++ {
		bc, err := p.backends.get(ctx, p.cfg.Target, p.cfg.Limits, req.ContentLength == 0)
		if err != nil {
			return p.unreachable(hc, b.w, req, err)
		}
		hc.target.Store(bc)
		if hc.lc.isClosed() {
			hc.closeTarget()
			return http.StatusBadGateway, false
		}
		resp, err := bc.roundTrip(req, te, hc.bodyPaused)
		if err != nil {
			err = bc.cause(err)
			hc.closeTarget()
			switch {
			case errors.Is(err, errStale) && stale < maxIdleBackends:
				stale++
				attempt-- // nothing was sent: not a retry
				continue
			case bc.reused && attempt == 0 && replayable(req) && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)):
				continue // the service closed the idle connection meanwhile
			}
			return p.sendFailed(hc, b, req, err)
		}
		return p.relayH1(hc, b, bc, req, resp)
	}
}

// bodyPaused moves the request body's clock on by d, the time the proxy
// was blocked writing it to the service: a slow service is not the
// client's slow body.
func (c *h1Conn) bodyPaused(d time.Duration) {
	if !c.bodyStart.IsZero() {
		c.bodyStart = c.bodyStart.Add(d)
	}
}

// sendFailed ends a request that could not be sent or was not answered:
// the client's body stopped (the connection closes), or the service is
// unreachable (502) or too slow (504).
func (p *Inbound) sendFailed(hc *h1Conn, b *h1Bufs, req *http.Request, err error) (int, bool) {
	if !errors.Is(err, errClientBody) {
		return p.unreachable(hc, b.w, req, err)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		p.timedOut(hc, stageRequestBody, err)
		return http.StatusRequestTimeout, false
	}
	return http.StatusBadRequest, false
}

// relayH1 relays the service's answer on bc to the client, then pools bc
// or closes it. It returns the status for the log and whether the client
// connection stays open.
func (p *Inbound) relayH1(hc *h1Conn, b *h1Bufs, bc *backendConn, req *http.Request, resp *http.Response) (int, bool) {
	code, keep, backendOK, err := relayResponse(b.w, bc, req, resp)
	// Bytes past the response's end (a body on a HEAD answer, a second
	// response) would answer the next request on this connection, maybe
	// another client's: it is not reused.
	if backendOK && bc.r.Buffered() == 0 && hc.target.CompareAndSwap(bc, nil) {
		p.backends.put(bc)
	} else {
		hc.closeTarget()
	}
	switch {
	case err != nil && code == 0:
		return p.unreachable(hc, b.w, req, bc.cause(err))
	case err != nil:
		// Cut after the head went out: the client's connection is
		// aborted, as the reverse proxy does.
		if bc.timeout != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			err = errors.Join(errServiceBody, bc.timeout)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			p.timedOut(hc, stageOf(err), err)
		}
		return code, false
	}
	return code, keep
}

// replayable reports whether req may be sent again on another connection
// after the service closed the first one without answering, as
// http.Transport does.
func replayable(req *http.Request) bool {
	if req.ContentLength != 0 {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return req.Header["Idempotency-Key"] != nil || req.Header["X-Idempotency-Key"] != nil
}

// unreachable logs a failed exchange with the service and answers 502, or
// 504 when the service stopped making progress before its answer.
func (p *Inbound) unreachable(hc *h1Conn, w *bufio.Writer, req *http.Request, err error) (int, bool) {
	v := verdict{code: http.StatusBadGateway, msg: unreachableMsg}
	if isTimeout(err) {
		p.timedOut(hc, stageOf(err), err)
		v = verdict{code: http.StatusGatewayTimeout, msg: serviceTimeoutMsg}
	} else {
		p.log.Error("target unreachable", "remote", req.RemoteAddr, "target", p.cfg.Target, "error", err.Error())
	}
	// The body may be partly sent: keep the connection only without one.
	return v.code, p.writeRefusal(hc, w, req, v, req.ContentLength == 0)
}

// Where an exchange failed, joined to the error: stageOf names the stage
// of a timeout after them.
var (
	errServiceDial  = errors.New("connecting to the service")
	errClientBody   = errors.New("reading the client's request body")
	errClientWrite  = errors.New("writing the response to the client")
	errServiceWrite = errors.New("writing the request to the service")
	errServiceBody  = errors.New("reading the service's response body")
)

// Timeout stages, the label of mutual_proxy_timeouts_total.
const (
	stageIdle            = "idle"
	stageRequestHead     = "request_head"
	stageRequestBody     = "request_body"
	stageResponseWrite   = "response_write"
	stageServiceDial     = "service_dial"
	stageServiceWrite    = "service_write"
	stageServiceResponse = "service_response"
	stageServiceBody     = "service_body"
)

// stageOf names the stage of an exchange's error (service_response when no
// other is named: waiting for the service's answer).
func stageOf(err error) string {
	switch {
	case errors.Is(err, errServiceDial):
		return stageServiceDial
	case errors.Is(err, errClientBody):
		return stageRequestBody
	case errors.Is(err, errClientWrite):
		return stageResponseWrite
	case errors.Is(err, errServiceWrite):
		return stageServiceWrite
	case errors.Is(err, errServiceBody):
		return stageServiceBody
	}
	return stageServiceResponse
}

// timedOut logs and counts an exchange that a client or the service let
// stall past its limit. An idle keep-alive connection closed is routine:
// counted, logged at debug level.
func (p *Inbound) timedOut(hc *h1Conn, stage string, err error) {
	p.logTimeout(hc.remote, idString(hc.lc.id), stage, err)
}

// logTimeout logs and counts a timeout at stage of a request from remote.
func (p *Inbound) logTimeout(remote, peer, stage string, err error) {
	limit := p.cfg.Limits.IdleTimeout
	switch stage {
	case stageRequestHead:
		limit = p.cfg.Limits.HandshakeTimeout
	case stageServiceDial:
		limit = p.cfg.Limits.DialTimeout
	}
	level := slog.LevelWarn
	if stage == stageIdle {
		level = slog.LevelDebug
	}
	p.log.Log(context.Background(), level, "request timed out", "remote", remote, "peer_id", peer, "stage", stage,
		"limit", limit.String(), "target", p.cfg.Target, "error", err.Error())
	p.cfg.Metrics.timeout(stage)
}

// serviceTimeoutMsg answers a request the service did not answer in time.
const serviceTimeoutMsg = "mutual proxy: the service behind this proxy did not answer in time"

// backendConn is a keep-alive connection to the service. Its reads and
// writes are bounded by progress deadlines: the service must take the
// request, start its answer and send each part of it within the idle
// timeout.
type backendConn struct {
	c      net.Conn
	r      *bufio.Reader
	w      *bufio.Writer
	dl     progress
	reused bool
	idle   time.Time
	// timeout is the read timeout seen, if any: a parser may report a
	// malformed line instead (the part read before it).
	timeout error
	// rc and peek check the idle socket without reading it (nil when the
	// connection is not a socket), made once per connection; open is
	// peek's result.
	rc   syscall.RawConn
	peek func(fd uintptr) bool
	open bool
	one  [1]byte
	// fh is the head of the answer being relayed when it is a usual one
	// (relayFast).
	fh fastHead
	// pendingCheck: the connection's check before reuse is still to be
	// made, at its first write; final: that write is the whole request,
	// which then goes with the check and the wait for the answer in one
	// visit to the poller (sendWait).
	pendingCheck, final bool
	send                func(fd uintptr) bool
	sw                  sendState
}

// sendState is sendWait's progress.
type sendState struct {
	buf   []byte
	n     int
	err   error
	sent  bool
	stale bool
}

// errStale: a pooled connection was closed by the service, or holds
// bytes nobody asked for; nothing was written on it.
var errStale = errors.New("pooled service connection closed or holding unasked bytes")

// newBackendConn wraps a new connection to the service.
func newBackendConn(c net.Conn, lim Limits) *backendConn {
	bc := &backendConn{c: c, dl: progress{c: c, d: lim.IdleTimeout}}
	bc.r, bc.w = bufio.NewReaderSize(bc, h1BufSize), bufio.NewWriterSize(bc, h1BufSize)
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			bc.rc = rc
			bc.peek = func(fd uintptr) bool {
				_, _, err := syscall.Recvfrom(int(fd), bc.one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
				bc.open = err == syscall.EAGAIN
				return true
			}
			bc.send = bc.sendStep
		}
	}
	return bc
}

// sendStep runs inside the poller's read: the first call checks the
// socket and writes the request, returning false to wait for the answer
// when all of it went; the call after the wake-up ends the wait.
func (bc *backendConn) sendStep(fd uintptr) bool {
	s := &bc.sw
	if s.sent || s.stale {
		return true
	}
	_, _, perr := syscall.Recvfrom(int(fd), bc.one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	if perr != syscall.EAGAIN {
		s.stale = bc.reused
		return true // a new connection: written the ordinary way
	}
	for {
		n, err := syscall.Write(int(fd), s.buf[s.n:])
		if err == syscall.EINTR {
			continue
		}
		s.n += max(n, 0)
		s.sent = true
		if err != nil && err != syscall.EAGAIN {
			s.err = os.NewSyscallError("write", err)
		}
		return err != nil || s.n < len(s.buf)
	}
}

// sendWait writes the whole request b after checking a pooled connection,
// and waits (bounded by the read deadline) for the service's answer
// without a read that would find nothing yet: the poller's readiness is
// reset when the wait begins, so the check, the write and the wait are
// one visit to it (a read after the write would otherwise cost a system
// call returning EAGAIN on every request).
func (bc *backendConn) sendWait(b []byte) (int, error) {
	bc.dl.extendRead(time.Now())
	bc.sw = sendState{buf: b}
	err := bc.rc.Read(bc.send)
	s := bc.sw
	bc.sw = sendState{}
	switch {
	case s.stale:
		return 0, errStale
	case s.err != nil:
		return s.n, errors.Join(errServiceWrite, s.err)
	case err != nil && s.n == len(b):
		// Sent, then no answer in time (or the connection closed).
		if errors.Is(err, os.ErrDeadlineExceeded) {
			bc.timeout = err
		}
		return len(b), err
	case err != nil:
		return s.n, errors.Join(errServiceWrite, err)
	}
	if s.n < len(b) {
		bc.dl.extendWrite(time.Now())
		n, err := bc.c.Write(b[s.n:])
		if err != nil {
			return s.n + n, errors.Join(errServiceWrite, err)
		}
	}
	return len(b), nil
}

// stillOpen reports whether an idle connection has neither been closed by
// the service nor received unasked bytes, without blocking.
func (bc *backendConn) stillOpen(now time.Time) bool {
	if bc.rc == nil {
		return true
	}
	bc.dl.extendRead(now)
	bc.open = false
	return bc.rc.Read(bc.peek) == nil && bc.open
}

func (bc *backendConn) Read(b []byte) (int, error) {
	if bc.timeout != nil {
		// The service had its idle timeout: a parser reading on gets
		// that, not another one.
		return 0, bc.timeout
	}
	bc.dl.extendRead(time.Now())
	n, err := bc.c.Read(b)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		bc.timeout = err
	}
	return n, err
}

// cause is err, or the read timeout behind it.
func (bc *backendConn) cause(err error) error {
	if bc.timeout != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return bc.timeout
	}
	return err
}

func (bc *backendConn) Write(b []byte) (int, error) {
	if bc.pendingCheck {
		bc.pendingCheck = false
		if bc.final {
			bc.final = false
			return bc.sendWait(b)
		}
		if !bc.stillOpen(time.Now()) {
			return 0, errStale
		}
	}
	bc.dl.extendWrite(time.Now())
	n, err := bc.c.Write(b)
	if err != nil {
		err = errors.Join(errServiceWrite, err)
	}
	return n, err
}

// roundTrip writes req (its body copied from the client) and reads the
// service's response head, relaying no 1xx: the caller does. A nil
// response and error: the head is a usual one, parsed into bc.fh.
// paused (nil for none) is told how long each write of the body blocked.
func (bc *backendConn) roundTrip(req *http.Request, te bool, paused func(time.Duration)) (*http.Response, error) {
	w := bc.w
	w.WriteString(req.Method)
	w.WriteByte(' ')
	// The target as the reverse proxy wrote it: re-encoded where the
	// client left a character a path may not hold ('#', '{', '\'), so
	// the service reads the path that was authorized.
	w.WriteString(req.URL.RequestURI())
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(req.Host)
	w.WriteString("\r\n")
	writeHeader(w, req.Header)
	if te {
		w.WriteString("Te: trailers\r\n")
	}
	w.WriteString("X-Forwarded-For: ")
	if host, _, err := net.SplitHostPort(req.RemoteAddr); err == nil {
		w.WriteString(host)
	}
	w.WriteString("\r\nX-Forwarded-Host: ")
	w.WriteString(req.Host)
	if req.TLS != nil {
		w.WriteString("\r\nX-Forwarded-Proto: https\r\n")
	} else {
		w.WriteString("\r\nX-Forwarded-Proto: http\r\n")
	}
	if n := req.ContentLength; n > 0 || req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch {
		w.WriteString("Content-Length: ")
		w.Write(strconv.AppendInt(w.AvailableBuffer(), n, 10))
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
	if req.ContentLength > 0 {
		if err := copyBody(w, bc, req.Body, req.ContentLength, paused); err != nil {
			return nil, err
		}
	}
	bc.final = bc.pendingCheck
	if err := w.Flush(); err != nil {
		return nil, err
	}
	if req.Method != http.MethodHead {
		fast, err := takeFastHead(bc.r, &bc.fh)
		switch {
		case err != nil:
			// Unchanged: forwardH1 retries on EOF or a reset.
			return nil, err
		case fast:
			return nil, nil // relayResponse relays bc.fh
		}
	}
	return readResponse(bc.r, req)
}

// readResponse is http.ReadResponse, but it also removes the headers a
// "Connection: close" names: net/http deletes such a Connection header,
// and with it the names of the hop-by-hop headers it lists, which must
// not reach the client (RFC 9110 section 7.6.1); removeHopByHop can no
// longer see them. The names are read from the head once it is buffered
// in r (a head longer than the buffer keeps net/http's behaviour). A read
// error is returned as bufferHead returns it.
func readResponse(r *bufio.Reader, req *http.Request) (*http.Response, error) {
	head, err := bufferHead(r)
	if err != nil {
		return nil, err
	}
	named := closeNamed(head)
	resp, err := http.ReadResponse(r, req)
	if err == nil {
		for _, k := range named {
			delete(resp.Header, k)
		}
	}
	return resp, err
}

// closeNamed returns the canonical names of the headers listed beside
// "close" in the Connection lines of head, a whole response head.
func closeNamed(head []byte) []string {
	var named []string
	closing := false
	for line := range bytes.SplitSeq(head, []byte("\r\n")) {
		name, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || !asciiFold(name, "Connection") {
			continue
		}
		for tok := range strings.SplitSeq(string(v), ",") {
			switch tok = textproto.TrimString(tok); {
			case strings.EqualFold(tok, "close"):
				closing = true
			case tok != "":
				named = append(named, textproto.CanonicalMIMEHeaderKey(tok))
			}
		}
	}
	if !closing {
		return nil
	}
	return named
}

// copyBody copies the client's n body bytes to the service: a small body
// behind the head in the write buffer, a large one through a pooled 32 KiB
// buffer written straight to the service as it arrives (as io.Copy would),
// paused (if not nil) told how long each such write took.
func copyBody(w *bufio.Writer, c io.Writer, body io.Reader, n int64, paused func(time.Duration)) error {
	if n > int64(w.Available()) {
		if err := w.Flush(); err != nil {
			return err
		}
		bp := httpBufs.Get().(*[32 << 10]byte)
		defer httpBufs.Put(bp)
		for n > 0 {
			k, err := io.ReadAtLeast(body, bp[:min(int64(len(bp)), n)], 1)
			if k > 0 {
				t0 := time.Now()
				_, werr := c.Write(bp[:k])
				if paused != nil {
					paused(time.Since(t0))
				}
				if werr != nil {
					return werr
				}
				n -= int64(k)
			}
			if err != nil && n > 0 {
				return errors.Join(errClientBody, err)
			}
		}
		return nil
	}
	buf := w.AvailableBuffer()[:n]
	if _, err := io.ReadFull(body, buf); err != nil {
		return errors.Join(errClientBody, err)
	}
	w.Write(buf)
	return nil
}

// relayResponse writes the service's response to the client: informational
// responses first, then the final one with its body, framed by length or
// chunked. It reports the status, whether the client connection stays
// open, and whether the service connection may be reused; or an error
// when the service sent no final response the client may have.
func relayResponse(w *bufio.Writer, bc *backendConn, req *http.Request, resp *http.Response) (code int, keep, backendOK bool, err error) {
	if resp == nil {
		return relayFast(w, bc, req)
	}
	for n := 0; resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols; n++ {
		if n == max1xx {
			return 0, false, false, errors.New("more than 5 informational (1xx) responses")
		}
		removeHopByHop(resp.Header, false)
		writeStatus(w, resp.StatusCode)
		writeHeader(w, resp.Header)
		w.WriteString("\r\n")
		if resp, err = readResponse(bc.r, req); err != nil {
			return 0, false, false, err
		}
	}
	code = resp.StatusCode
	if code == http.StatusSwitchingProtocols {
		return 0, false, false, errors.New("the service switched protocols (101) though the client did not ask to")
	}
	removeHopByHop(resp.Header, false)
	bodyless := req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	var bp *[32 << 10]byte
	var first []byte
	var rerr error
	if !bodyless {
		delete(resp.Header, "Content-Length")
		if resp.ContentLength != 0 {
			// The first bytes go with the head, and name its type if the
			// service did not.
			bp = httpBufs.Get().(*[32 << 10]byte)
			defer httpBufs.Put(bp)
			var k int
			k, rerr = resp.Body.Read(bp[:])
			first = bp[:k]
		}
	}
	chunked := writeResponseHead(w, req, resp, bodyless, first)
	if bodyless || resp.ContentLength == 0 {
		resp.Body.Close()
	} else if err := copyResponseBody(w, bc, resp.Body, bp, first, rerr, chunked); err != nil {
		return code, false, false, err // cut short: abort, as the reverse proxy does
	} else {
		resp.Body.Close()
		if chunked {
			w.WriteString("0\r\n")
			writeHeader(w, resp.Trailer)
			w.WriteString("\r\n")
		}
	}
	if err := w.Flush(); err != nil {
		return code, false, !resp.Close, errors.Join(errClientWrite, err)
	}
	return code, !req.Close, !resp.Close, nil
}

// writeResponseHead writes the final response's head as http.Server would
// for the reverse proxy (Date and a sniffed Content-Type when missing) and
// reports whether the body is chunked.
func writeResponseHead(w *bufio.Writer, req *http.Request, resp *http.Response, bodyless bool, first []byte) (chunked bool) {
	h := resp.Header
	if _, ok := h["Content-Type"]; !ok && !bodyless && len(first) > 0 {
		h["Content-Type"] = []string{http.DetectContentType(first)}
	}
	writeStatus(w, resp.StatusCode)
	if _, ok := h["Date"]; !ok {
		writeDate(w)
	}
	writeHeader(w, h)
	chunked = !bodyless && resp.ContentLength < 0
	cl := int64(-1)
	switch {
	case chunked:
		w.WriteString("Transfer-Encoding: chunked\r\n")
		if len(resp.Trailer) > 0 {
			w.WriteString("Trailer: ")
			i := 0
			for k := range resp.Trailer {
				if i++; i > 1 {
					w.WriteString(", ")
				}
				w.WriteString(k)
			}
			w.WriteString("\r\n")
		}
	case !bodyless:
		cl = resp.ContentLength
	}
	endResponseHead(w, cl, req.Close)
	return chunked
}

// endResponseHead ends a response head: Content-Length n (none when
// negative), the client's close, the empty line.
func endResponseHead(w *bufio.Writer, n int64, close bool) {
	if n >= 0 {
		w.WriteString("Content-Length: ")
		w.Write(strconv.AppendInt(w.AvailableBuffer(), n, 10))
		w.WriteString("\r\n")
	}
	if close {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n")
}

// copyResponseBody copies the body (first, then the rest from the
// service) to the client, flushing whenever the service has nothing more
// buffered, so that a stream (server-sent events) reaches the client as it
// is written. It returns what failed, on either side.
func copyResponseBody(w *bufio.Writer, bc *backendConn, body io.Reader, bp *[32 << 10]byte, first []byte, rerr error, chunked bool) error {
	for {
		if len(first) > 0 {
			if err := writeBody(w, first, chunked); err != nil {
				return errors.Join(errClientWrite, err)
			}
			if bc.r.Buffered() == 0 {
				if err := w.Flush(); err != nil {
					return errors.Join(errClientWrite, err)
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return errors.Join(errServiceBody, rerr)
		}
		var k int
		k, rerr = body.Read(bp[:])
		first = bp[:k]
	}
	return nil
}

func writeBody(w *bufio.Writer, b []byte, chunked bool) error {
	if chunked {
		w.Write(strconv.AppendUint(w.AvailableBuffer(), uint64(len(b)), 16))
		w.WriteString("\r\n")
	}
	_, err := w.Write(b)
	if chunked {
		_, err = w.WriteString("\r\n")
	}
	return err
}

// backendPool keeps idle keep-alive connections to the service, newest
// first.
type backendPool struct {
	mu   sync.Mutex
	idle []*backendConn
}

// get returns an idle connection to target that the service has neither
// closed nor written to since its last answer, or a new one.
//
// With deferCheck (a request without a body, which can be sent again on
// another connection), a pooled connection's check is left to its first
// write (errStale when it fails, nothing written).
func (bp *backendPool) get(ctx context.Context, target string, lim Limits, deferCheck bool) (*backendConn, error) {
	now := time.Now()
	for {
		bp.mu.Lock()
		n := len(bp.idle)
		if n == 0 {
			bp.mu.Unlock()
			break
		}
		bc := bp.idle[n-1]
		bp.idle[n-1] = nil
		bp.idle = bp.idle[:n-1]
		bp.mu.Unlock()
		if now.Sub(bc.idle) < backendIdleTimeout && (deferCheck && bc.rc != nil || bc.stillOpen(now)) {
			bc.reused = true
			bc.pendingCheck = deferCheck && bc.rc != nil
			return bc, nil
		}
		bc.c.Close()
	}
	c, err := (&net.Dialer{Timeout: lim.DialTimeout}).DialContext(ctx, "tcp", target)
	if err != nil {
		return nil, errors.Join(errServiceDial, err)
	}
	bc := newBackendConn(c, lim)
	bc.pendingCheck = deferCheck && bc.rc != nil
	return bc, nil
}

// put keeps bc for another request, or closes it when enough are idle.
func (bp *backendPool) put(bc *backendConn) {
	bc.idle = time.Now()
	bp.mu.Lock()
	if len(bp.idle) < maxIdleBackends {
		bp.idle = append(bp.idle, bc)
		bc = nil
	}
	bp.mu.Unlock()
	if bc != nil {
		bc.c.Close()
	}
}

// closeAll closes every idle connection (shutdown).
func (bp *backendPool) closeAll() {
	bp.mu.Lock()
	idle := bp.idle
	bp.idle = nil
	bp.mu.Unlock()
	for _, bc := range idle {
		bc.c.Close()
	}
}
