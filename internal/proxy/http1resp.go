package proxy

// The service's usual answer, relayed without net/http's response parser:
// http.ReadResponse builds a Response, a Header map and a string per line
// for every request (most of the HTTP/1.1 path's allocations, ~8% of its
// CPU). A head this file takes is one net/http reads the same way: status
// 200-599 but 204 and 304, one Content-Length in plain digits, no
// Transfer-Encoding or Trailer, no Connection: close, token header names,
// only the bytes plainHead allows, all of it buffered. Anything else, and any response to
// HEAD, is left untouched in the buffer for http.ReadResponse, which the
// fuzz test FuzzFastResponse compares this path against.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
)

// maxFastLines bounds the header lines of a head taken here.
const maxFastLines = 32

// fastHead is a parsed response head: offsets into the buffered bytes,
// valid until the reader is advanced.
type fastHead struct {
	code  int
	cl    int64
	close bool
	size  int // the head's length, through its empty line
	n     int
	lines [maxFastLines]fastLine
	// conn are the lines (indexes) of Connection headers, whose tokens
	// name more headers to drop.
	conn    [4]uint8
	nconn   int
	hasCT   bool
	hasDate bool
}

// fastLine is one header line: name buf[ns:ne], value buf[vs:ve] (OWS
// trimmed); drop when the proxy does not forward it.
type fastLine struct {
	ns, ne, vs, ve uint16
	drop           bool
}

// clBody reads a body of n bytes from r: io.EOF with its last byte, and
// io.ErrUnexpectedEOF when r ends first (as net/http's body does).
type clBody struct {
	r *bufio.Reader
	n int64
}

func (b *clBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	k, err := b.r.Read(p)
	b.n -= int64(k)
	if b.n == 0 {
		return k, io.EOF
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return k, err
}

// peekFastHead waits until a response head is buffered in r and parses it
// into h when this path takes it. It consumes nothing: false with a nil
// error leaves r for http.ReadResponse. A read error is returned as it is
// (bufio.Reader forgets it once reported, and a second read of the socket
// would report another: EOF after ECONNRESET, or a second idle timeout);
// once part of a head arrived, as io.ErrUnexpectedEOF (the service did
// answer: the request is not sent again).
func peekFastHead(r *bufio.Reader, h *fastHead) (bool, error) {
	head, err := bufferHead(r)
	if head == nil {
		return false, err
	}
	return parseFastHead(head, h), nil
}

// bufferHead waits until a response head is buffered in r and returns it,
// its empty line included, consuming nothing; nil with a nil error when
// the head does not fit r's buffer. Read errors as peekFastHead says.
func bufferHead(r *bufio.Reader) ([]byte, error) {
	if _, err := r.Peek(1); err != nil {
		return nil, err
	}
	from := 0
	for {
		buf, _ := r.Peek(r.Buffered())
		// Resume the search where the last one ended: a head dripped
		// byte by byte is scanned once, not once per byte.
		if i := bytes.Index(buf[from:], []byte("\r\n\r\n")); i >= 0 {
			return buf[:from+i+4], nil
		}
		if len(buf) == r.Size() {
			return nil, nil
		}
		from = max(len(buf)-3, 0)
		if _, err := r.Peek(len(buf) + 1); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				err = fmt.Errorf("service's response head cut after %d bytes (%v): %w", len(buf), err, io.ErrUnexpectedEOF)
			}
			return nil, err
		}
	}
}

// takeFastHead is peekFastHead, but for a body whose type the service did
// not name and none of which is buffered yet: net/http's path waits for
// its first bytes to sniff the type.
func takeFastHead(r *bufio.Reader, h *fastHead) (bool, error) {
	ok, err := peekFastHead(r, h)
	return ok && (h.hasCT || h.cl == 0 || r.Buffered() > h.size), err
}

// parseFastHead parses head (a whole response head, its empty line
// included) into h, and reports whether this path takes it.
func parseFastHead(head []byte, h *fastHead) bool {
	*h = fastHead{size: len(head), cl: -1}
	if len(head) > 0xffff || !plainHead(head) {
		return false
	}
	eol := bytes.Index(head, []byte("\r\n"))
	line := head[:eol]
	// "HTTP/1.1 ddd" and a reason after a space, or none.
	if len(line) < 12 || string(line[:9]) != "HTTP/1.1 " || len(line) > 12 && line[12] != ' ' {
		return false
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return false
		}
	}
	h.code = int(line[9]-'0')*100 + int(line[10]-'0')*10 + int(line[11]-'0')
	if h.code < 200 || h.code > 599 || h.code == http.StatusNoContent || h.code == http.StatusNotModified {
		return false
	}
	for pos := eol + 2; pos < len(head)-2; {
		end := pos + bytes.Index(head[pos:], []byte("\r\n"))
		if h.n == maxFastLines || !h.parseLine(head, pos, end) {
			return false
		}
		pos = end + 2
	}
	// Framed by the close, or no body: net/http's. So is a close (net/http
	// drops the Connection header then, and with it the names it lists).
	if h.cl < 0 || h.close {
		return false
	}
	h.markDropped(head)
	return true
}

// parseLine parses the header line head[pos:end] into h.lines[h.n].
func (h *fastHead) parseLine(head []byte, pos, end int) bool {
	colon := bytes.IndexByte(head[pos:end], ':')
	if colon <= 0 {
		return false
	}
	name := head[pos : pos+colon]
	for _, c := range name {
		if !isTokenByte(c) {
			return false
		}
	}
	vs, ve := pos+colon+1, end
	for vs < ve && (head[vs] == ' ' || head[vs] == '\t') {
		vs++
	}
	for ve > vs && (head[ve-1] == ' ' || head[ve-1] == '\t') {
		ve--
	}
	value := head[vs:ve]
	switch {
	case asciiFold(name, "Content-Length"):
		if h.cl >= 0 || len(value) == 0 || len(value) > 18 {
			return false
		}
		for _, c := range value {
			if c < '0' || c > '9' {
				return false
			}
		}
		h.cl, _ = strconv.ParseInt(string(value), 10, 64)
	case asciiFold(name, "Transfer-Encoding"), asciiFold(name, "Trailer"):
		return false
	case asciiFold(name, "Connection"):
		if h.nconn == len(h.conn) {
			return false
		}
		h.conn[h.nconn] = uint8(h.n)
		h.nconn++
		if hasToken(value, "close") {
			h.close = true
		}
	}
	h.lines[h.n] = fastLine{ns: uint16(pos), ne: uint16(pos + colon), vs: uint16(vs), ve: uint16(ve)}
	h.n++
	return true
}

// markDropped marks the lines the proxy does not forward (hop-by-hop ones,
// those named in Connection, Content-Length, which it writes itself) and
// notes whether Content-Type and Date are left, as removeHopByHop and
// writeResponseHead do with net/http's Header.
func (h *fastHead) markDropped(head []byte) {
	for i := range h.lines[:h.n] {
		l := &h.lines[i]
		name := head[l.ns:l.ne]
		l.drop = isHopName(name) || asciiFold(name, "Content-Length")
		for _, ci := range h.conn[:h.nconn] {
			c := h.lines[ci]
			if !l.drop && namedIn(head[c.vs:c.ve], name) {
				l.drop = true
			}
		}
		if !l.drop {
			h.hasCT = h.hasCT || asciiFold(name, "Content-Type")
			h.hasDate = h.hasDate || asciiFold(name, "Date")
		}
	}
}

// isHopName reports whether name is a hop-by-hop header (isHopHeader, any
// case).
func isHopName(name []byte) bool {
	for _, k := range hopHeaders {
		if asciiFold(name, k) {
			return true
		}
	}
	return false
}

// namedIn reports whether the comma-separated list v names the header name.
func namedIn(v, name []byte) bool {
	for len(v) > 0 {
		tok := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		tok = bytes.Trim(tok, " \t")
		if len(tok) == len(name) && asciiFold(tok, string(name)) {
			return true
		}
	}
	return false
}

// hasToken reports whether the comma-separated list v holds tok (any case).
func hasToken(v []byte, tok string) bool {
	return namedIn(v, []byte(tok))
}

// asciiFold reports whether b is s, ASCII case folded.
func asciiFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// isTokenByte reports whether c may be in a header name (RFC 9110 tchar).
func isTokenByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return c < 0x80 && c > 0x20 && bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

// writeCanonical writes a token header name as net/http's Header keys it
// (textproto.CanonicalMIMEHeaderKey).
func writeCanonical(w *bufio.Writer, name []byte) {
	upper := true
	for _, c := range name {
		switch {
		case upper && 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case !upper && 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		w.WriteByte(c)
		upper = c == '-'
	}
}

// relayFast relays a response whose head peekFastHead took (in bc.fh) as
// relayResponse relays net/http's reading of it.
func relayFast(w *bufio.Writer, bc *backendConn, req *http.Request) (code int, keep, backendOK bool, err error) {
	h := &bc.fh
	buf, _ := bc.r.Peek(bc.r.Buffered())
	head := buf[:h.size]
	code = h.code
	var bp *[32 << 10]byte
	var first []byte
	var rerr error
	body := clBody{r: bc.r, n: h.cl}
	if h.cl > 0 {
		bp = httpBufs.Get().(*[32 << 10]byte)
		defer httpBufs.Put(bp)
		// The bytes of the body already behind the head go with it (it
		// stays buffered, and head valid, until written).
		k := copy(bp[:min(int64(len(bp)), h.cl)], buf[h.size:])
		first = bp[:k]
	}
	writeStatus(w, code)
	if !h.hasDate {
		writeDate(w)
	}
	if !h.hasCT && len(first) > 0 {
		w.WriteString("Content-Type: ")
		w.WriteString(http.DetectContentType(first))
		w.WriteString("\r\n")
	}
	for _, l := range h.lines[:h.n] {
		if l.drop {
			continue
		}
		writeCanonical(w, head[l.ns:l.ne])
		w.WriteString(": ")
		w.Write(head[l.vs:l.ve])
		w.WriteString("\r\n")
	}
	endResponseHead(w, h.cl, req.Close)
	bc.r.Discard(h.size)
	if h.cl > 0 {
		bc.r.Discard(len(first))
		body.n -= int64(len(first))
		if body.n == 0 {
			rerr = io.EOF
		}
		if err := copyResponseBody(w, bc, &body, bp, first, rerr, false); err != nil {
			return code, false, false, err
		}
	}
	if err := w.Flush(); err != nil {
		return code, false, !h.close, errors.Join(errClientWrite, err)
	}
	return code, !req.Close, !h.close, nil
}
