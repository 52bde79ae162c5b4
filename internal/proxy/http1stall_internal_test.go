package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/testnet"
)

// countingConn counts the reads of a real socket and the idle timeouts
// they met.
type countingConn struct {
	net.Conn
	reads, timeouts int
}

func (c *countingConn) Read(b []byte) (int, error) {
	c.reads++
	n, err := c.Conn.Read(b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.timeouts++
	}
	return n, err
}

// TestStalledHeadOneTimeout: a service that sends its status line and
// stops costs one idle timeout, not one per parser that reads on (the
// fast path's, then net/http's): the answer is a 504 at the
// service_response stage within --idle-timeout.
func TestStalledHeadOneTimeout(t *testing.T) {
	for _, answer := range []string{"", "HTTP/1.1 200 OK\r\n", "HTTP/1.1 200 OK\r\nContent-"} {
		t.Run(answer, func(t *testing.T) {
			stop := make(chan struct{})
			defer close(stop)
			addr := testnet.Serve(t, func(c net.Conn) {
				if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
					io.WriteString(c, answer)
					<-stop
				}
			})
			raw, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			cc := &countingConn{Conn: raw}
			bc := newBackendConn(cc, Limits{IdleTimeout: 50 * time.Millisecond})
			req := &http.Request{Method: "GET", URL: &url.URL{Path: "/"}, Host: "b", Header: http.Header{}, RemoteAddr: "127.0.0.1:1"}
			resp, err := bc.roundTrip(req, false, nil)
			if err == nil {
				t.Fatalf("an answer from a stalled service: %v", resp)
			}
			err = bc.cause(err)
			if !isTimeout(err) || stageOf(err) != stageServiceResponse {
				t.Fatalf("error %v (stage %s), want a timeout at %s", err, stageOf(err), stageServiceResponse)
			}
			if cc.timeouts != 1 {
				t.Fatalf("%d idle timeouts in %d reads, want 1", cc.timeouts, cc.reads)
			}
		})
	}
}

// TestPeekFastHeadDripped: a head that arrives a byte at a time is found
// where it ends, the empty line split across reads.
func TestPeekFastHeadDripped(t *testing.T) {
	head := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n"
	r := bufio.NewReaderSize(&oneByte{r: bytes.NewReader([]byte(head + "ok"))}, h1BufSize)
	var h fastHead
	ok, err := peekFastHead(r, &h)
	if err != nil || !ok || h.size != len(head) || h.code != 200 || h.cl != 2 {
		t.Fatalf("peekFastHead: %v %v, head %+v; want the %d-byte head", ok, err, h, len(head))
	}
}

// oneByte reads one byte at a time.
type oneByte struct{ r io.Reader }

func (o *oneByte) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	return o.r.Read(b[:1])
}
