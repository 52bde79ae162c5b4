package proxy

import (
	"bufio"
	"bytes"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// relayed is what a relay of a service's answer did: what the client got,
// how the exchange ended, and how much of the service's bytes it left.
type relayed struct {
	code            int
	keep, backendOK bool
	failed          bool
	left            int
	out             []byte
}

// relayBoth relays raw, as the service's answer to a GET, through
// net/http's parser and relayResponse, and through relayFast when the fast
// path takes the head (fast false otherwise).
func relayBoth(t *testing.T, raw []byte, reqClose bool) (old, quick relayed, fast bool) {
	t.Helper()
	req := &http.Request{Method: "GET", Close: reqClose}
	run := func(useFast bool) (relayed, bool) {
		src := bytes.NewReader(raw)
		bc := &backendConn{r: bufio.NewReaderSize(src, h1BufSize)}
		var out bytes.Buffer
		w := bufio.NewWriterSize(&out, h1BufSize)
		var r relayed
		var err error
		if useFast {
			if ok, _ := takeFastHead(bc.r, &bc.fh); !ok {
				return r, false
			}
			r.code, r.keep, r.backendOK, err = relayResponse(w, bc, req, nil)
		} else {
			resp, rerr := http.ReadResponse(bc.r, req)
			if rerr != nil {
				return relayed{failed: true}, true
			}
			r.code, r.keep, r.backendOK, err = relayResponse(w, bc, req, resp)
		}
		w.Flush()
		r.failed = err != nil
		r.left = bc.r.Buffered() + src.Len()
		r.out = out.Bytes()
		return r, true
	}
	quick, fast = run(true)
	old, _ = run(false)
	return old, quick, fast
}

// sameRelay fails t unless the two relays did the same: same outcome, same
// bytes of the service's left for the next answer, and responses the
// client reads the same (header order and a generated Date aside).
func sameRelay(t *testing.T, raw []byte, old, quick relayed) {
	t.Helper()
	if old.failed && old.code == 0 {
		t.Fatalf("the fast path took a head net/http refuses: %q", raw)
	}
	if old.code != quick.code || old.keep != quick.keep || old.backendOK != quick.backendOK || old.failed != quick.failed || old.left != quick.left {
		t.Fatalf("%q: net/http's relay %+v, fast %+v", raw, old, quick)
	}
	read := func(b []byte) (*http.Response, []byte, bool) {
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
		if err != nil {
			t.Fatalf("%q relayed as %q: %v", raw, b, err)
		}
		body, err := io.ReadAll(resp.Body)
		return resp, body, err == nil
	}
	ro, bo, okO := read(old.out)
	rq, bq, okQ := read(quick.out)
	if !bytes.Contains(raw[:bytes.Index(raw, []byte("\r\n\r\n"))], []byte("\nDate:")) {
		delete(ro.Header, "Date")
		delete(rq.Header, "Date")
	}
	if ro.StatusCode != rq.StatusCode || !maps.EqualFunc(ro.Header, rq.Header, slices.Equal) || !bytes.Equal(bo, bq) || okO != okQ {
		t.Fatalf("%q relayed\n%q by net/http's path,\n%q by the fast one", raw, old.out, quick.out)
	}
}

// FuzzFastResponse: whatever the service sends, a head the fast path takes
// is one net/http takes too, and relayed the same way (status, headers,
// body, keep-alive on both sides, the service's bytes left for the next
// answer). Seeds: f.Add below and testdata/fuzz/FuzzFastResponse.
func FuzzFastResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\nx-a: 1\r\nX-A: 2\r\n\r\nabcHTTP/1.1 200 OK\r\n",
		"HTTP/1.1 200 OK\r\nConnection: x-secret, keep-alive\r\nX-Secret: s\r\nKeep-Alive: 5\r\nContent-Length: 2\r\n\r\nhi",
		"HTTP/1.1 200 OK\r\nConnection: content-type\r\nContent-Type: a/b\r\nContent-Length: 5\r\n\r\n<html",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
		"HTTP/1.1 200 OK\r\nContent-Length: 007\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\n\r\n1234567",
		"HTTP/1.1 503 x y z\r\nContent-Length:\t1 \r\nUpgrade: h2c\r\nTe: x\r\n\r\n!",
	} {
		f.Add([]byte(s), false)
	}
	for _, tt := range declined {
		f.Add([]byte(tt.raw), true)
	}
	f.Fuzz(func(t *testing.T, raw []byte, reqClose bool) {
		old, quick, fast := relayBoth(t, raw, reqClose)
		if fast {
			sameRelay(t, raw, old, quick)
		}
	})
}

// declined are heads the fast path leaves to net/http, which refuses
// some (request smuggling's and response splitting's tools) and reads the
// others with rules of its own.
var declined = []struct{ name, raw string }{
	{"two Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"},
	{"two equal Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"},
	{"Content-Length list", "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello"},
	{"Content-Length and chunked", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
	{"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"},
	{"signed Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"},
	{"hex Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello"},
	{"empty Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n"},
	{"huge Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n"},
	{"no Content-Length", "HTTP/1.1 200 OK\r\n\r\nuntil close"},
	{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello"},
	{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 5\n\nhello"},
	{"bare LF in a line", "HTTP/1.1 200 OK\r\nX-A: a\nContent-Length: 5\r\n\r\nhello"},
	{"bare CR", "HTTP/1.1 200 OK\r\nX-A: a\rContent-Length: 5\r\n\r\nhello"},
	{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 5\r\n\r\nhello"},
	{"folded Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n 0\r\n\r\nhello"},
	{"NUL in a value", "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 5\r\n\r\nhello"},
	{"DEL in a value", "HTTP/1.1 200 OK\r\nX-A: a\x7fb\r\nContent-Length: 5\r\n\r\nhello"},
	{"non-token name", "HTTP/1.1 200 OK\r\nX(A): a\r\nContent-Length: 5\r\n\r\nhello"},
	{"line without colon", "HTTP/1.1 200 OK\r\nX-A\r\nContent-Length: 5\r\n\r\nhello"},
	{"empty name", "HTTP/1.1 200 OK\r\n: a\r\nContent-Length: 5\r\n\r\nhello"},
	{"informational", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
	{"no content", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello"},
	{"not modified", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"},
	{"switching protocols", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"},
	{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
	{"two-digit status", "HTTP/1.1 20 OK\r\nContent-Length: 5\r\n\r\nhello"},
	{"status glued to reason", "HTTP/1.1 200OK\r\nContent-Length: 5\r\n\r\nhello"},
	{"Connection: close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello"},
	{"Trailer", "HTTP/1.1 200 OK\r\nTrailer: X-A\r\nContent-Length: 5\r\n\r\nhello"},
	{"head past the buffer", "HTTP/1.1 200 OK\r\nX-A: " + strings.Repeat("a", h1BufSize) + "\r\nContent-Length: 5\r\n\r\nhello"},
	{"no head end", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"},
	{"untyped body not yet here", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"},
}

// TestFastResponseDeclines: each head above goes to net/http's parser, not
// the fast path; the usual heads do take the fast path.
func TestFastResponseDeclines(t *testing.T) {
	for _, tt := range declined {
		if _, _, fast := relayBoth(t, []byte(tt.raw), false); fast {
			t.Errorf("%s: taken by the fast path: %q", tt.name, tt.raw)
		}
	}
	for _, raw := range []string{
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n",
	} {
		old, quick, fast := relayBoth(t, []byte(raw), false)
		if !fast {
			t.Errorf("not taken by the fast path: %q", raw)
			continue
		}
		sameRelay(t, []byte(raw), old, quick)
	}
}

// TestConnectionCloseNamedHeadersRemoved: the headers a service's
// Connection header names are hop-by-hop and never reach the client, also
// when it says close (which net/http's parser deletes, names and all).
func TestConnectionCloseNamedHeadersRemoved(t *testing.T) {
	for _, conn := range []string{"close, X-Hop", "X-Hop, close", "x-hop,CLOSE", "X-Hop"} {
		raw := "HTTP/1.1 200 OK\r\nConnection: " + conn + "\r\nX-Hop: secret\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok"
		bc := &backendConn{r: bufio.NewReaderSize(strings.NewReader(raw), h1BufSize)}
		req := &http.Request{Method: "GET"}
		resp, err := readResponse(bc.r, req)
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		if _, _, _, err := relayResponse(w, bc, req, resp); err != nil {
			t.Fatalf("%q: relay: %v", raw, err)
		}
		w.Flush()
		got, err := http.ReadResponse(bufio.NewReader(&out), nil)
		if err != nil {
			t.Fatalf("%q relayed as %q: %v", raw, out.String(), err)
		}
		if v := got.Header.Get("X-Hop"); v != "" {
			t.Errorf("Connection: %s: the client got X-Hop: %s", conn, v)
		}
		if got.Header.Get("X-Kept") != "yes" {
			t.Errorf("Connection: %s: X-Kept lost", conn)
		}
	}
}
