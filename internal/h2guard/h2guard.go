// Package h2guard bounds what one HTTP/2 client can make a mutual server
// (the proxy in http mode, the CA's API) do: how many requests it has in
// flight, how large its header blocks grow, how long a silent peer keeps
// its streams, and how many running requests it may start and cancel.
//
// Go's HTTP/2 server already refuses streams past MaxConcurrentStreams,
// closes a connection whose header block (CONTINUATION frames) runs past
// MaxHeaderBytes, and bounds the handlers running at once when a client
// resets streams (CVE-2023-44487). It does not bound how fast a client may
// start handlers and cancel them: each one can cost a database query or a
// request to the service behind a proxy. Guard closes such connections.
//
//	hs := &http.Server{Handler: h}
//	h2guard.Configure(hs, h2guard.Options{Log: log})
package h2guard

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Limits applied by Configure.
const (
	// MaxConcurrentStreams is how many requests one HTTP/2 connection may
	// have in flight; the server refuses streams past it.
	MaxConcurrentStreams = 250
	// MaxCancelledStreams: a connection whose client has cancelled more
	// running requests than this, and more than half of all its requests,
	// is closed (rapid reset).
	MaxCancelledStreams = 100
	// MaxHeaderBytes bounds a request's header block: names, values and, in
	// HTTP/2, the CONTINUATION frames that carry them.
	MaxHeaderBytes = 64 << 10
)

// Options tune Configure. The zero value is usable.
type Options struct {
	// Log receives one line per connection closed by the guard; nil
	// discards.
	Log *slog.Logger
	// WriteByteTimeout closes a connection that accepts no bytes for this
	// long (a client that stops reading holds its responses in memory);
	// zero: 2 minutes.
	WriteByteTimeout time.Duration
}

// Configure sets hs's header and HTTP/2 limits and wraps hs.Handler (set it
// first) in the rapid-reset guard. It keeps a MaxHeaderBytes or ConnContext
// already set.
func Configure(hs *http.Server, o Options) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.WriteByteTimeout <= 0 {
		o.WriteByteTimeout = 2 * time.Minute
	}
	if hs.MaxHeaderBytes <= 0 {
		hs.MaxHeaderBytes = MaxHeaderBytes
	}
	hs.HTTP2 = &http.HTTP2Config{
		MaxConcurrentStreams:      MaxConcurrentStreams,
		MaxDecoderHeaderTableSize: 4096,
		MaxEncoderHeaderTableSize: 4096,
		// A peer that stops answering is found and its streams freed.
		SendPingTimeout:  time.Minute,
		PingTimeout:      15 * time.Second,
		WriteByteTimeout: o.WriteByteTimeout,
	}
	prev := hs.ConnContext
	hs.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if prev != nil {
			ctx = prev(ctx, c)
		}
		return context.WithValue(ctx, connKey{}, &connStats{conn: c})
	}
	hs.Handler = guard(hs.Handler, o.Log)
}

// connStats counts one connection's HTTP/2 requests and those its client
// cancelled while they ran.
type connStats struct {
	conn              net.Conn
	requests, cancels atomic.Int64
	closed            atomic.Bool
}

type connKey struct{}

// guard runs next and closes an HTTP/2 connection whose client cancels most
// of its requests once they have started (see MaxCancelledStreams).
func guard(next http.Handler, log *slog.Logger) http.Handler {
	if next == nil {
		next = http.DefaultServeMux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r)
		if r.ProtoMajor != 2 {
			return // HTTP/1 requests pay nothing more
		}
		cs, ok := r.Context().Value(connKey{}).(*connStats)
		if !ok {
			return
		}
		n := cs.requests.Add(1)
		if r.Context().Err() == nil {
			return
		}
		if c := cs.cancels.Add(1); c > MaxCancelledStreams && c*2 > n && cs.closed.CompareAndSwap(false, true) {
			log.Warn("connection closed", "remote", r.RemoteAddr,
				"reason", "rapid reset: the client cancelled most of its HTTP/2 requests", "cancelled", c, "requests", n)
			cs.conn.Close()
		}
	})
}
