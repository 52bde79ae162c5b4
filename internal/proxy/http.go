package proxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/h2guard"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/tlsconfig"
)

// XFCCHeader carries the verified caller to the service, in the format of
// Envoy's x-forwarded-client-cert.
const XFCCHeader = "X-Forwarded-Client-Cert"

// serveHTTP is Serve for HTTP mode: each request is authorized by identity,
// method and path; the caller's identity reaches the service in XFCCHeader.
func (p *Inbound) serveHTTP(ctx context.Context, ln net.Listener) error {
	target := &url.URL{Scheme: "http", Host: p.cfg.Target}
	dialer := &net.Dialer{Timeout: p.cfg.Limits.DialTimeout}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host
			r.SetXForwarded()
			// Set the identity header last, on the outgoing request: the
			// reverse proxy drops headers a client names in Connection, and
			// a client must not be able to remove (or add) it.
			forwardIdentity(r)
		},
		Transport: &http.Transport{
			// Each read and write on the service's connection makes progress
			// within the idle timeout, as on the HTTP/1.1 path.
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := dialer.DialContext(ctx, network, addr)
				if err != nil {
					return nil, errors.Join(errServiceDial, err)
				}
				return &progressConn{Conn: c, dl: progress{c: c, d: p.cfg.Limits.IdleTimeout}}, nil
			},
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     backendIdleTimeout,
			// As on the HTTP/1.1 path: the service starts its answer
			// within the idle timeout, or the client gets a 504.
			ResponseHeaderTimeout: p.cfg.Limits.IdleTimeout,
		},
		BufferPool: relayBuffers{},
		ModifyResponse: func(resp *http.Response) error {
			// A 101's body is the upgraded connection, which the reverse
			// proxy takes as it is.
			if resp.StatusCode != http.StatusSwitchingProtocols && resp.Body != nil && resp.Body != http.NoBody {
				resp.Body = &serviceBody{ReadCloser: resp.Body, p: p, r: resp.Request}
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			peer := peerID(r)
			if !isTimeout(err) {
				p.log.Error("target unreachable", "remote", r.RemoteAddr, "target", p.cfg.Target, "error", err.Error())
				http.Error(w, unreachableMsg, http.StatusBadGateway)
				return
			}
			// The stage named on the error (the dial, the request's
			// write, the client's body), else the wait for the answer.
			stage := stageOf(err)
			p.logTimeout(r.RemoteAddr, peer, stage, err)
			if stage == stageRequestBody {
				http.Error(w, "mutual proxy: the request's body stopped arriving", http.StatusRequestTimeout)
				return
			}
			http.Error(w, serviceTimeoutMsg, http.StatusGatewayTimeout)
		},
	}
	hs := &http.Server{
		Handler: p.trackUpgrades(p.httpHandler(rp)),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if rc, ok := c.(*replayConn); ok {
				return context.WithValue(ctx, connKey{}, rc.hc)
			}
			return context.WithValue(ctx, connKey{}, &httpConn{conn: c})
		},
		ReadHeaderTimeout: p.cfg.Limits.HandshakeTimeout,
		IdleTimeout:       p.cfg.Limits.IdleTimeout,
		ErrorLog:          nil,
		ConnState:         p.connState,
	}
	h2guard.Configure(hs, h2guard.Options{Log: p.log, WriteByteTimeout: p.cfg.Limits.IdleTimeout})
	hs.Protocols = new(http.Protocols)
	hs.Protocols.SetHTTP1(true)
	hs.Protocols.SetHTTP2(true)
	hs.TLSConfig = p.tls
	l := &handshakeListener{Listener: ln, p: p, ctx: ctx, out: make(chan acceptResult), done: make(chan struct{})}
	stopAccept := context.AfterFunc(ctx, func() { ln.Close() })
	defer stopAccept()
	go l.run()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	var serveErr error
	select {
	case serveErr = <-errc:
		if ctx.Err() == nil {
			ln.Close()
			<-l.done
			return serveErr
		}
	case <-ctx.Done():
	}
	deadline := time.Now().Add(p.cfg.Limits.DrainTimeout)
	sctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	p.closeIdleH1()
	defer p.backends.closeAll()
	if serveErr == nil {
		<-errc
	}
	// No handshake goroutine may start after this: wait for the accept loop.
	<-l.done
	// Shutdown neither waits for nor closes upgraded (hijacked)
	// connections: they drain like tcp ones, within the same deadline.
	p.drainUntil(deadline)
	if n := p.sample.dropped.Swap(0); n > 0 {
		p.log.Info("requests not logged", "count", n, "limit_per_second", p.sample.limit)
	}
	return nil
}

// forwardIdentity puts on the outgoing request the identity header that
// the handler put on the incoming one (after removing every client copy)
// when it authorized a peer, and removes it otherwise.
func forwardIdentity(r *httputil.ProxyRequest) {
	v := r.In.Header[XFCCHeader]
	if len(v) != 1 {
		r.Out.Header.Del(XFCCHeader)
		return
	}
	if out := r.Out.Header[XFCCHeader]; len(out) == 1 {
		out[0] = v[0] // Out's values are a copy of In's
		return
	}
	r.Out.Header[XFCCHeader] = []string{v[0]}
}

// connState releases a connection when http.Server is done with it. A
// hijacked connection (a 101 Switching Protocols tunnel) stays tracked and
// counted: trackUpgrades releases it when the tunnel ends.
func (p *Inbound) connState(c net.Conn, st http.ConnState) {
	if st == http.StateClosed {
		p.untrack(c)
		p.release()
		p.wg.Done()
	}
}

type connKey struct{}

// httpConn is what the http-mode proxy remembers about one client
// connection across its requests (HTTP/1.1 keep-alive or HTTP/2 streams,
// so every field is safe for concurrent use). It lives exactly as long as
// the connection: revocation, which closes the connection, discards it.
type httpConn struct {
	conn net.Conn
	// tls is the connection's TLS state when http.Server cannot see it (a
	// connection handed over by the HTTP/1.1 path), else nil.
	tls *tls.ConnectionState
	// peer is the verified client, parsed from its certificate once (the
	// certificate of a TLS connection never changes).
	peer atomic.Pointer[peerInfo]
	// allowAll is the policy under which a rule allows this peer every
	// method and path; nil, or a policy other than the one in force (a
	// reload installs a new *authz.Policy), means check each request.
	allowAll atomic.Pointer[authz.Policy]
}

// peerInfo is a verified client as the proxy authorizes and announces it.
type peerInfo struct {
	cert  *x509.Certificate
	id    spiffeid.ID
	err   error // the certificate carries no valid SPIFFE ID
	str   string
	roles []string
	// xfcc is the X-Forwarded-Client-Cert header's value, as the one
	// element of a slice shared by all requests (read only).
	xfcc []string
	// partner is what the peer may reach as a partner's (checkPartner).
	partner atomic.Pointer[partnerDecision]
}

// connOf returns the proxy's record of the connection r arrived on, or nil.
func connOf(r *http.Request) *httpConn {
	hc, _ := r.Context().Value(connKey{}).(*httpConn)
	return hc
}

// peerID is the verified client of r's connection as logged, or "".
func peerID(r *http.Request) string {
	if hc := connOf(r); hc != nil {
		if pi := hc.peer.Load(); pi != nil {
			return pi.str
		}
	}
	return ""
}

// peerOf returns the verified client of r's connection, parsed once per
// connection.
func (p *Inbound) peerOf(hc *httpConn, leaf *x509.Certificate) *peerInfo {
	if hc != nil {
		if pi := hc.peer.Load(); pi != nil && pi.cert == leaf {
			return pi
		}
	}
	pi := &peerInfo{cert: leaf}
	pi.id, pi.err = x509svid.IDFromCert(leaf)
	if pi.err == nil {
		pi.str = pi.id.String()
		// Roles only from this trust domain's certificates: a federated
		// CA could mint any role.
		pi.roles = p.peerRoles(pi.id, leaf)
		pi.xfcc = []string{p.xfcc(leaf, pi.str)}
	}
	if hc != nil {
		hc.peer.Store(pi)
	}
	return pi
}

// authorize applies the policy in force to one request from pi. A peer that
// a rule allows every method and path is remembered for the connection
// until the policy changes; otherwise every request is matched against the
// rules (method and path rules stay per request).
func (p *Inbound) authorize(hc *httpConn, pi *peerInfo, method, path string) error {
	if pi.err != nil {
		return pi.err
	}
	if err := p.checkPartner(&pi.partner, pi.id, method, path); err != nil {
		return err
	}
	pol := p.cfg.Policy.Policy()
	if hc != nil && hc.allowAll.Load() == pol {
		return nil
	}
	if err := pol.Allow(authz.Request{ID: pi.id, Roles: pi.roles, Method: method, Path: path}); err != nil {
		return err
	}
	if hc != nil && pol.Allow(authz.Request{ID: pi.id, Roles: pi.roles}) == nil {
		hc.allowAll.Store(pol)
	}
	return nil
}

// trackUpgrades keeps a connection that a request upgrades (WebSocket and
// other 101 Switching Protocols tunnels) under the proxy's control: it stays
// tracked, so revocation and the drain close it, and counted against
// MaxConnections until the tunnel ends; closing it also ends the request,
// so the reverse proxy closes the tunnel's leg to the service; and
// IdleTimeout of silence both ways closes it.
func (p *Inbound) trackUpgrades(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Only a request asking to switch protocols can be hijacked by the
		// reverse proxy; others pay nothing here.
		var c net.Conn
		if hc := connOf(r); hc != nil {
			c = hc.conn
		}
		if c == nil || r.ProtoMajor != 1 || len(r.Header["Upgrade"]) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		hw := &hijackWriter{ResponseWriter: w, p: p, conn: c, cancel: cancel}
		next.ServeHTTP(hw, r.WithContext(ctx))
		if hw.tunnel != nil {
			hw.tunnel.stop()
			c.Close()
			p.untrack(c)
			p.release()
			p.wg.Done()
		}
	})
}

// hijackWriter hands the reverse proxy an upgraded connection that the
// proxy still tracks, and watches it for idleness.
type hijackWriter struct {
	http.ResponseWriter
	p      *Inbound
	conn   net.Conn
	cancel context.CancelFunc
	tunnel *idleConn
}

// Hijack takes the connection over from http.Server for a protocol switch.
func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.p.mu.Lock()
	lc := w.p.conns[w.conn]
	w.p.mu.Unlock()
	w.tunnel = newIdleConn(c, w.p.cfg.Limits.IdleTimeout, func() {
		if lc != nil {
			lc.close()
		} else {
			c.Close()
		}
	})
	// Closing the connection (revocation, drain, idleness) ends the
	// request, and the reverse proxy then closes its leg to the service.
	if lc == nil || !lc.attach(w.cancel) {
		w.cancel()
		c.Close()
	}
	return w.tunnel, brw, nil
}

func (w *hijackWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *hijackWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// idleConn is an upgraded connection that closes itself (through onIdle)
// when nothing has been read from or written to it for idle.
type idleConn struct {
	net.Conn
	last  atomic.Int64
	timer *time.Timer
	mu    sync.Mutex
	done  bool
}

func newIdleConn(c net.Conn, idle time.Duration, onIdle func()) *idleConn {
	ic := &idleConn{Conn: c}
	ic.last.Store(time.Now().UnixNano())
	ic.mu.Lock()
	defer ic.mu.Unlock()
	ic.timer = time.AfterFunc(idle, func() {
		ic.mu.Lock()
		if ic.done {
			ic.mu.Unlock()
			return
		}
		since := time.Since(time.Unix(0, ic.last.Load()))
		if since < idle {
			ic.timer.Reset(idle - since)
			ic.mu.Unlock()
			return
		}
		ic.done = true
		ic.mu.Unlock()
		onIdle()
	})
	return ic
}

func (ic *idleConn) Read(b []byte) (int, error) {
	n, err := ic.Conn.Read(b)
	if n > 0 {
		ic.last.Store(time.Now().UnixNano())
	}
	return n, err
}

func (ic *idleConn) Write(b []byte) (int, error) {
	n, err := ic.Conn.Write(b)
	if n > 0 {
		ic.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// CloseWrite passes the service's EOF on to the client.
func (ic *idleConn) CloseWrite() error {
	closeWrite(ic.Conn)
	return nil
}

func (ic *idleConn) stop() {
	ic.mu.Lock()
	ic.done = true
	ic.timer.Stop()
	ic.mu.Unlock()
}

type acceptResult struct {
	c   net.Conn
	err error
}

// handshakeListener completes TLS handshakes (in their own goroutines,
// bounded by the handshake timeout) before http.Server sees a connection,
// so that refused handshakes are logged with a reason and a slow client
// holds no server goroutine.
type handshakeListener struct {
	net.Listener
	p    *Inbound
	ctx  context.Context
	out  chan acceptResult
	done chan struct{} // closed when run returns
}

func (l *handshakeListener) run() {
	defer close(l.done)
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			select {
			case l.out <- acceptResult{err: err}:
			case <-l.ctx.Done():
			}
			return
		}
		if !l.p.admit(c) {
			continue
		}
		l.p.wg.Add(1)
		go func() {
			tc, relay, err := l.p.handshake(l.ctx, c)
			if err != nil {
				l.p.refused(c, err)
				c.Close()
				l.p.release()
				l.p.wg.Done()
				return
			}
			lc := &liveConn{conn: relay}
			if tc != nil {
				l.p.cfg.Metrics.handshake("ok", "")
				if cs := tc.ConnectionState(); len(cs.PeerCertificates) > 0 {
					lc.id, _ = tlsconfig.PeerID(cs)
					lc.serial = pki.FormatSerial(cs.PeerCertificates[0].SerialNumber)
				}
			}
			l.p.track(relay, lc)
			// Check the peer again now that a revocation would find the
			// connection: one learnt while the client held back the end of
			// its handshake is not lost (as in tcp mode).
			if tc != nil && l.p.cfg.PeerCheck != nil && !lc.id.IsZero() {
				if err := l.p.cfg.PeerCheck(lc.id, tc.ConnectionState().PeerCertificates); err != nil {
					l.p.refused(c, err)
					relay.Close()
					l.p.untrack(relay)
					l.p.release()
					l.p.wg.Done()
					return
				}
			}
			l.p.cfg.Metrics.conn("ok")
			if wantsH1(tc) {
				l.p.startH1(l.ctx, relay, tc, lc, l.handoff)
				return
			}
			select {
			case l.out <- acceptResult{c: relay}:
			case <-l.ctx.Done():
				relay.Close()
				l.p.untrack(relay)
				l.p.release()
				l.p.wg.Done()
			}
		}()
	}
}

// handoff passes a connection from the HTTP/1.1 path to http.Server; false
// when the proxy is shutting down.
func (l *handshakeListener) handoff(c net.Conn) bool {
	select {
	case l.out <- acceptResult{c: c}:
		return true
	case <-l.ctx.Done():
		return false
	}
}

func (l *handshakeListener) Accept() (net.Conn, error) {
	select {
	case r := <-l.out:
		return r.c, r.err
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	}
}

func (l *handshakeListener) Close() error { return l.Listener.Close() }

// statusWriter records the status code for logs and metrics, and logs
// and counts a write to the client that timed out (p set: a forwarded
// request's).
type statusWriter struct {
	http.ResponseWriter
	code     int
	p        *Inbound
	r        *http.Request
	peer     string
	timedOut bool
}

// check logs and counts err, once, when it is a write timeout.
func (w *statusWriter) check(err error) {
	if err != nil && w.p != nil && !w.timedOut && isTimeout(err) {
		w.timedOut = true
		w.p.logTimeout(w.r.RemoteAddr, w.peer, stageResponseWrite, err)
	}
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.check(err)
	return n, err
}

func (w *statusWriter) Flush() {
	w.FlushError()
}

// FlushError flushes to the client (the reverse proxy's flushes come
// here, through http.ResponseController).
func (w *statusWriter) FlushError() error {
	err := http.NewResponseController(w.ResponseWriter).Flush()
	w.check(err)
	return err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (p *Inbound) httpHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		hc := connOf(r)
		if r.TLS == nil && hc != nil {
			// A connection that the HTTP/1.1 path handed over (replayConn):
			// http.Server does not see its *tls.Conn.
			r.TLS = hc.tls
		}
		v := p.admitRequest(hc, r)
		if v.code != 0 {
			http.Error(sw, v.msg, v.code)
			p.finish(r, sw.code, v.peer, v.outcome, v.reason, start)
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &progressBody{ReadCloser: r.Body, rc: http.NewResponseController(w), d: p.cfg.Limits.IdleTimeout}
		}
		sw.p, sw.r, sw.peer = p, r, v.peer
		next.ServeHTTP(sw, r)
		p.finish(r, sw.code, v.peer, "forwarded", "", start)
	})
}

// progressBody reads a request's body for the reverse proxy under a
// progress deadline (http.Server has only one for the whole request,
// which would cut a long upload): each read must return within d, and
// the whole body arrive by bodyDeadline, as on the HTTP/1.1 path.
type progressBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	d     time.Duration
	start time.Time
	got   int64
}

func (b *progressBody) Read(p []byte) (int, error) {
	now := time.Now()
	if b.start.IsZero() {
		b.start = now
	}
	dl := now.Add(b.d)
	if by := bodyDeadline(b.start, b.d, b.got); by.Before(dl) {
		dl = by
	}
	b.rc.SetReadDeadline(dl)
	n, err := b.ReadCloser.Read(p)
	b.got += int64(n)
	if err != nil {
		// Done with the body: http.Server's own read (for the client's
		// close) has no deadline.
		b.rc.SetReadDeadline(time.Time{})
		if err != io.EOF {
			err = errors.Join(errClientBody, err)
		}
	}
	return n, err
}

// serviceBody reads the service's response body for the reverse proxy,
// which aborts the client's response when a read fails: one that timed
// out is logged and counted (service_body), as on the HTTP/1.1 path.
type serviceBody struct {
	io.ReadCloser
	p      *Inbound
	r      *http.Request
	logged bool
}

func (b *serviceBody) Read(buf []byte) (int, error) {
	n, err := b.ReadCloser.Read(buf)
	if err != nil && !b.logged && isTimeout(err) {
		b.logged = true
		b.p.logTimeout(b.r.RemoteAddr, peerID(b.r), stageServiceBody, err)
	}
	return n, err
}

// progressConn is a connection to the service on which each read and write
// must make progress within the idle timeout.
type progressConn struct {
	net.Conn
	mu sync.Mutex // the transport reads and writes in two goroutines
	dl progress
}

func (c *progressConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	c.dl.extendRead(time.Now())
	c.mu.Unlock()
	return c.Conn.Read(b)
}

// Write writes to the service; a request being sent is progress, so the
// read deadline moves too (a request body that stops arriving from the
// client is the client's timeout, which comes first). It stays a quarter
// of d past the write's, so that a write the service stops taking is the
// timeout seen, not the transport's wait for the answer in the meantime.
func (c *progressConn) Write(b []byte) (int, error) {
	now := time.Now()
	c.mu.Lock()
	c.dl.extendWrite(now)
	if d := c.dl.d; c.dl.read.Before(now.Add(d + d/4)) {
		c.dl.read = now.Add(d + d/2)
		c.dl.other = false
		c.dl.c.SetReadDeadline(c.dl.read)
	}
	c.mu.Unlock()
	n, err := c.Conn.Write(b)
	if err != nil {
		err = errors.Join(errServiceWrite, err)
	}
	return n, err
}

// verdict is the proxy's decision on one request: code is 0 when it may
// be forwarded, else the status to answer with msg.
type verdict struct {
	code                 int
	peer                 string
	outcome, reason, msg string
}

// admitRequest applies every check the proxy makes on a request before it
// may reach the service, on both HTTP paths: it removes every client copy
// of the identity header, refuses paths that servers read in different
// ways, authorizes the peer, and sets the identity header on r.Header.
func (p *Inbound) admitRequest(hc *httpConn, r *http.Request) verdict {
	// Never trust an identity header from the client, in any spelling
	// a service could read as it.
	scrubHeaders(r.Header)
	// Authorize the path the service will see: refuse paths that
	// servers read in different ways rather than guess which way this
	// one does. What passes is forwarded as sent.
	reqPath := r.URL.Path
	if escaped := r.URL.EscapedPath(); escaped != "" {
		var err error
		if reqPath, err = authz.CheckPath(escaped); err != nil {
			var pe *authz.PathError
			reason := err.Error()
			if errors.As(err, &pe) {
				reason = pe.Reason
			}
			return verdict{code: http.StatusBadRequest, outcome: "refused", reason: reason, msg: "mutual proxy: bad request: " + err.Error()}
		}
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		pi := p.peerOf(hc, r.TLS.PeerCertificates[0])
		if err := p.authorize(hc, pi, r.Method, reqPath); err != nil {
			return verdict{code: http.StatusForbidden, peer: pi.str, outcome: "denied", reason: err.Error(), msg: "mutual proxy: forbidden: " + err.Error()}
		}
		// The forwarding path moves it to the outgoing request.
		r.Header[XFCCHeader] = pi.xfcc
		return verdict{peer: pi.str}
	}
	kind := "no-certificate"
	if r.TLS == nil {
		kind = "plaintext"
	}
	p.cfg.Migration.Record(addr(r.RemoteAddr), kind)
	return verdict{}
}

func (p *Inbound) finish(r *http.Request, code int, peer, outcome, reason string, start time.Time) {
	if code == 0 {
		code = http.StatusOK
	}
	d := time.Since(start)
	p.cfg.Metrics.request(code, d)
	if !p.log.Enabled(r.Context(), slog.LevelInfo) {
		return
	}
	if outcome == "forwarded" {
		logged, dropped := p.sample.allow(start)
		if dropped > 0 {
			p.log.Info("requests not logged", "count", dropped, "limit_per_second", p.sample.limit)
		}
		if !logged {
			return
		}
	}
	attrs := [...]slog.Attr{slog.String("remote", r.RemoteAddr), slog.String("peer_id", peer), slog.String("method", r.Method),
		slog.String("path", r.URL.Path), slog.String("proto", r.Proto), slog.Int("status", code), slog.String("outcome", outcome),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000), slog.String("reason", reason)}
	n := len(attrs)
	if reason == "" {
		n--
	}
	p.log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs[:n]...)
}

// DefaultRequestLogLimit is how many forwarded requests a second get a log
// line when InboundConfig.RequestLogLimit is zero.
const DefaultRequestLogLimit = 100

// logSampler lets through at most limit log lines a second (all when limit
// is negative) and counts the others.
type logSampler struct {
	limit   int64
	second  atomic.Int64
	used    atomic.Int64
	dropped atomic.Int64
}

// allow reports whether a line at now is logged and, at the first line of
// a new second, how many the seconds before did not log.
func (s *logSampler) allow(now time.Time) (ok bool, dropped int64) {
	if s.limit < 0 {
		return true, 0
	}
	if sec, cur := now.Unix(), s.second.Load(); sec != cur && s.second.CompareAndSwap(cur, sec) {
		s.used.Store(0)
		dropped = s.dropped.Swap(0)
	}
	if s.used.Add(1) <= s.limit {
		return true, dropped
	}
	s.dropped.Add(1)
	return false, dropped
}

// httpBufs holds the reverse proxy's copy buffers, as arrays so that
// returning one allocates nothing.
var httpBufs = sync.Pool{New: func() any { return new([32 << 10]byte) }}

// relayBuffers lends the reverse proxy pooled buffers instead of a fresh
// 32 KiB per response.
type relayBuffers struct{}

func (relayBuffers) Get() []byte { return httpBufs.Get().(*[32 << 10]byte)[:] }

func (relayBuffers) Put(b []byte) {
	if cap(b) >= 32<<10 {
		httpBufs.Put((*[32 << 10]byte)(b[:32<<10]))
	}
}

// proxyHeaders are the headers the proxy writes for the service; a
// client's copy under another spelling (see foldedEqual) must not reach it.
var proxyHeaders = []string{XFCCHeader, "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded"}

// scrubHeaders removes from a client's request every spelling of the
// identity header (X_Forwarded_Client_Cert, x-forwarded_client-cert...:
// CGI, WSGI and PHP backends fold case and read '_' as '-'), and the other
// spellings of the X-Forwarded-* headers the reverse proxy sets.
func scrubHeaders(h http.Header) {
	for k := range h {
		for _, canon := range proxyHeaders {
			if len(k) == len(canon) && foldedEqual(k, canon) && (canon == XFCCHeader || k != canon) {
				delete(h, k)
			}
		}
	}
}

// foldedEqual reports whether header names a and b (of equal length) are
// the same once case is folded and every byte but a letter or a digit is
// taken for '-', as backends that rename headers may do.
func foldedEqual(a, b string) bool {
	for i := 0; i < len(a); i++ {
		if fold(a[i]) != fold(b[i]) {
			return false
		}
	}
	return true
}

func fold(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		return c
	}
	return '-'
}

// xfccValue quotes a value as Envoy does when it holds a separator.
func xfccValue(v string) string {
	if strings.ContainsAny(v, ",;=\"") {
		return `"` + strings.ReplaceAll(v, `"`, `\"`) + `"`
	}
	return v
}

// xfcc formats the caller for the service as Envoy does:
// By=<proxy's ID>;Hash=<SHA-256 of the client certificate>;Subject="...";URI=<client ID>;DNS=...
func (p *Inbound) xfcc(c *x509.Certificate, peer string) string {
	var b strings.Builder
	if svid, err := p.cfg.SVID.GetX509SVID(); err == nil {
		b.WriteString("By=" + svid.ID.String() + ";")
	}
	sum := sha256.Sum256(c.Raw)
	b.WriteString("Hash=" + hex.EncodeToString(sum[:]))
	b.WriteString(";Subject=\"" + strings.ReplaceAll(c.Subject.String(), `"`, `\"`) + "\"")
	b.WriteString(";URI=" + xfccValue(peer))
	for _, d := range c.DNSNames {
		b.WriteString(";DNS=" + xfccValue(d))
	}
	return b.String()
}

func addr(s string) net.Addr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		return &net.TCPAddr{}
	}
	return a
}
