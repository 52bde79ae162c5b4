package publish_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testwait"
)

const proxyID = "spiffe://example.org/ns/prod/proxy"

// guarded is an inbound proxy whose revocation watcher closes the
// connections of revoked certificates, wired as `mutual proxy inbound` does.
type guarded struct {
	addr    string
	proxy   *proxy.Inbound
	watcher *revocation.Watcher
	// closed receives, for each revocation learnt, when and how many
	// connections it closed.
	closed chan closedEvent
}

type closedEvent struct {
	serial string
	at     time.Time
	n      int
}

// closedFor waits for the watcher to report the revocation of serial
// (skipping others, such as those learnt from the CRL at start).
func (g *guarded) closedFor(t testing.TB, serial string) closedEvent {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-g.closed:
			if ev.serial == serial {
				return ev
			}
		case <-timeout:
			t.Fatalf("the watcher never reported the revocation of %s", serial)
		}
	}
}

// startGuarded runs a watcher on caURLs and an inbound proxy in front of
// target, presenting src. They stop when the test ends.
func startGuarded(t testing.TB, src *identity.DirSource, target string, caURLs []string, crlInterval time.Duration) *guarded {
	t.Helper()
	pol, err := authz.FromPatterns([]string{"spiffe://example.org/ns/prod/*"})
	if err != nil {
		t.Fatal(err)
	}
	w := &revocation.Watcher{CAURLs: caURLs, Source: src, CRLInterval: crlInterval}
	p, err := proxy.NewInbound(proxy.InboundConfig{
		Target: target, SVID: src, Bundle: src, Policy: proxy.StaticPolicy{P: pol},
		Mode: proxy.Strict, Protocol: proxy.TCP, PeerCheck: w.Check,
		Limits: proxy.Limits{DrainTimeout: time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	g := &guarded{proxy: p, watcher: w, closed: make(chan closedEvent, 64)}
	w.OnRevoke = func(e revocation.Event) {
		n := p.CloseConnections(func(_ spiffeid.ID, serial string) bool { return serial == e.Serial })
		g.closed <- closedEvent{serial: e.Serial, at: time.Now(), n: n}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	g.addr = testnet.Run(t, p.Serve).Addr
	return g
}

// proxyIdentity enrolls the proxy from the CA and serves it from a directory.
func (e *caEnv) proxyIdentity(t testing.TB) *identity.DirSource {
	t.Helper()
	return testca.DirSource(t, e.Enroll(t, proxyID, api.TokenRequest{IPAddresses: []string{"127.0.0.1"}}))
}

// peerConn is a client's live connection through the proxy.
type peerConn struct {
	conn *tls.Conn
	r    *bufio.Reader
}

// dialProxy connects to addr with id's certificate and checks one echoed
// line, so that the connection is established and authorized end to end.
func dialProxy(t testing.TB, addr string, id *identity.Identity) (*peerConn, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, clientTLS(id, "127.0.0.1"))
	if err != nil {
		return nil, err
	}
	pc := &peerConn{conn: c, r: bufio.NewReader(c)}
	t.Cleanup(func() { c.Close() })
	if err := pc.roundTrip("hello from " + id.ID.String()); err != nil {
		c.Close()
		return nil, err
	}
	return pc, nil
}

// roundTrip sends a line and reads it back (10 s safety timeout).
func (pc *peerConn) roundTrip(line string) error {
	pc.conn.SetDeadline(time.Now().Add(10 * time.Second))
	defer pc.conn.SetDeadline(time.Time{})
	if _, err := io.WriteString(pc.conn, line+"\n"); err != nil {
		return err
	}
	got, err := pc.r.ReadString('\n')
	if err != nil {
		return err
	}
	if got != line+"\n" {
		return fmt.Errorf("echo %q, want %q", got, line)
	}
	return nil
}

// waitClosed reads until the connection fails (EOF, reset), with a 10 s
// safety timeout, and returns when that happened.
func (pc *peerConn) waitClosed(t testing.TB) time.Time {
	t.Helper()
	pc.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 256)
	for {
		_, err := pc.r.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the revoked client's connection is still open after 10 s")
		}
		return time.Now()
	}
}

// refused checks that a new connection with id's certificate is refused:
// at the handshake, or (TLS 1.3: the server checks the client certificate
// after the client's handshake is done) at the first read.
func refused(t testing.TB, addr string, id *identity.Identity) {
	t.Helper()
	pc, err := dialProxy(t, addr, id)
	if err == nil {
		pc.conn.Close()
		t.Fatalf("a new connection with the revoked certificate %s was accepted", serialOf(id.Leaf()))
	}
	t.Logf("new handshake with the revoked certificate refused: %v", err)
}

// TestProxyClosesRevokedConnections: through a real inbound proxy whose
// watcher follows the CA's push feed, revoking a client closes its live
// connection and refuses its next handshake, and leaves other clients
// alone. Then, with the feed cut, the CRL fallback does the same at the next
// refresh.
func TestProxyClosesRevokedConnections(t *testing.T) {
	t.Parallel()
	e := startCA(t, "")
	src := e.proxyIdentity(t)
	target := testnet.Echo(t)

	t.Run("push feed", func(t *testing.T) {
		g := startGuarded(t, src, target, []string{e.URL}, 0)
		testwait.Eventually(t, g.watcher.FeedUp, "the watcher never connected to the feed")
		a := e.Enroll(t, "spiffe://example.org/ns/prod/client-a", api.TokenRequest{})
		b := e.Enroll(t, "spiffe://example.org/ns/prod/client-b", api.TokenRequest{})
		ca, err := dialProxy(t, g.addr, a)
		if err != nil {
			t.Fatal(err)
		}
		cb, err := dialProxy(t, g.addr, b)
		if err != nil {
			t.Fatal(err)
		}

		start := time.Now()
		e.revoke(t, a.Leaf(), "keyCompromise")
		returned := time.Now()
		closedAt := ca.waitClosed(t)
		ev := g.closedFor(t, serialOf(a.Leaf()))
		if ev.n != 1 {
			t.Fatalf("watcher closed %d connections for %s, want 1", ev.n, ev.serial)
		}
		t.Logf("push feed: revoke call → connection closed: %d ms (revoke call took %d ms; watcher learnt it %d ms after the call)",
			closedAt.Sub(start).Milliseconds(), returned.Sub(start).Milliseconds(), ev.at.Sub(start).Milliseconds())
		refused(t, g.addr, a)
		if err := cb.roundTrip("still here"); err != nil {
			t.Fatalf("client B's connection was disturbed: %v", err)
		}
		if _, err := dialProxy(t, g.addr, b); err != nil {
			t.Fatalf("client B can no longer connect: %v", err)
		}

		// A few more trials, for the distribution.
		var lat []time.Duration
		for i := range 20 {
			c := e.Enroll(t, fmt.Sprintf("spiffe://example.org/ns/prod/trial-%d", i), api.TokenRequest{})
			cc, err := dialProxy(t, g.addr, c)
			if err != nil {
				t.Fatal(err)
			}
			s := time.Now()
			e.revoke(t, c.Leaf(), "")
			lat = append(lat, cc.waitClosed(t).Sub(s))
			g.closedFor(t, serialOf(c.Leaf()))
		}
		slices.Sort(lat)
		t.Logf("push feed: revoke call → connection closed over %d trials: min %v, median %v, max %v", len(lat), lat[0], lat[len(lat)/2], lat[len(lat)-1])
		if err := cb.roundTrip("still here after all that"); err != nil {
			t.Fatalf("client B's connection was disturbed: %v", err)
		}
	})

	t.Run("feed cut, CRL fallback", func(t *testing.T) {
		cut := newFeedCutter(t, e, src)
		g := startGuarded(t, src, target, []string{cut.url}, 500*time.Millisecond)
		testwait.Eventually(t, g.watcher.FeedUp, "the watcher never connected to the feed through the relay")
		c := e.Enroll(t, "spiffe://example.org/ns/prod/client-c", api.TokenRequest{})
		d := e.Enroll(t, "spiffe://example.org/ns/prod/client-d", api.TokenRequest{})
		cc, err := dialProxy(t, g.addr, c)
		if err != nil {
			t.Fatal(err)
		}
		cd, err := dialProxy(t, g.addr, d)
		if err != nil {
			t.Fatal(err)
		}

		cut.cut()
		testwait.Eventually(t, func() bool { return !g.watcher.FeedUp() }, "the watcher still reports the feed up after the cut")
		crlBefore := cut.crlFetches.Load()

		start := time.Now()
		e.revoke(t, c.Leaf(), "keyCompromise")
		closedAt := cc.waitClosed(t)
		ev := g.closedFor(t, serialOf(c.Leaf()))
		if ev.n != 1 {
			t.Fatalf("watcher closed %d connections for %s, want 1", ev.n, ev.serial)
		}
		t.Logf("feed cut: revoke call → connection closed through the CRL fallback: %d ms", closedAt.Sub(start).Milliseconds())
		if g.watcher.FeedUp() {
			t.Fatal("the feed came back up: the revocation may not have come from the CRL")
		}
		if cut.crlFetches.Load() == crlBefore {
			t.Fatal("no CRL was fetched after the cut")
		}
		if n := cut.feedAfterCut.Load(); n == 0 {
			t.Fatal("the watcher never retried the feed while it was cut")
		}
		refused(t, g.addr, c)
		if err := cd.roundTrip("still here"); err != nil {
			t.Fatalf("client D's connection was disturbed: %v", err)
		}
	})
}

// feedCutter is an HTTP relay in front of the CA's API that can cut the
// revocation feed (closing live streams and refusing new ones) while still
// serving the CRL. It reaches the CA over mTLS with the proxy's identity.
type feedCutter struct {
	url          string
	isCut        atomic.Bool
	crlFetches   atomic.Int64
	feedAfterCut atomic.Int64

	mu      sync.Mutex
	streams map[*http.Request]context.CancelFunc
}

func newFeedCutter(t testing.TB, e *caEnv, src *identity.DirSource) *feedCutter {
	t.Helper()
	fc := &feedCutter{streams: map[*http.Request]context.CancelFunc{}}
	up, _ := url.Parse(e.URL)
	id := src.Identity()
	rp := httputil.NewSingleHostReverseProxy(up)
	rp.FlushInterval = -1
	rp.Transport = &http.Transport{TLSClientConfig: clientTLS(id, "127.0.0.1")}
	rp.ErrorLog = discardLogger()
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/revocations", func(w http.ResponseWriter, r *http.Request) {
		if fc.isCut.Load() {
			fc.feedAfterCut.Add(1)
			http.Error(w, "feed cut by the test", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithCancel(r.Context())
		r = r.WithContext(ctx)
		fc.mu.Lock()
		fc.streams[r] = cancel
		fc.mu.Unlock()
		defer func() {
			fc.mu.Lock()
			delete(fc.streams, r)
			fc.mu.Unlock()
			cancel()
		}()
		rp.ServeHTTP(w, r)
	})
	mux.HandleFunc("/crl/", func(w http.ResponseWriter, r *http.Request) {
		fc.crlFetches.Add(1)
		rp.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux, ErrorLog: discardLogger()}
	served := make(chan struct{})
	go func() { defer close(served); hs.Serve(ln) }()
	t.Cleanup(func() {
		fc.cut()
		hs.Close()
		<-served
		rp.Transport.(*http.Transport).CloseIdleConnections()
	})
	fc.url = "http://" + ln.Addr().String()
	return fc
}

// cut refuses the feed from now on and ends the live streams.
func (fc *feedCutter) cut() {
	fc.isCut.Store(true)
	fc.mu.Lock()
	for _, cancel := range fc.streams {
		cancel()
	}
	fc.mu.Unlock()
}

func discardLogger() *log.Logger { return log.New(io.Discard, "", 0) }

// TestProxyStaplesOCSP: the proxy staples a current OCSP response for its
// own certificate, fetched from the responder the certificate names, to
// clients that ask (crypto/tls clients always do).
func TestProxyStaplesOCSP(t *testing.T) {
	t.Parallel()
	e := startCA(t, "")
	src := e.proxyIdentity(t)
	st := &revocation.Stapler{Source: src}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); st.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	me := src.Identity()
	testwait.Eventually(t, func() bool { return st.Staple(me.Leaf()) != nil }, "no staple fetched")
	if st.Staple(e.Intermediate) != nil || st.Staple(nil) != nil {
		t.Fatal("a staple is offered for another certificate")
	}

	pol, _ := authz.FromPatterns([]string{"spiffe://example.org/ns/prod/*"})
	p, err := proxy.NewInbound(proxy.InboundConfig{Target: testnet.Echo(t), SVID: src, Bundle: src, Policy: proxy.StaticPolicy{P: pol},
		Staple: st.Staple, Limits: proxy.Limits{DrainTimeout: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	addr := testnet.Run(t, p.Serve).Addr

	cl := e.Enroll(t, "spiffe://example.org/ns/prod/client", api.TokenRequest{})
	pc, err := dialProxy(t, addr, cl)
	if err != nil {
		t.Fatal(err)
	}
	raw := pc.conn.ConnectionState().OCSPResponse
	if len(raw) == 0 {
		t.Fatal("no OCSP response stapled")
	}
	r, err := ocsp.ParseResponseForCert(raw, me.Leaf(), me.Chain[1])
	if err != nil || r.Status != ocsp.Good {
		t.Fatalf("stapled response: %+v %v", r, err)
	}
	pc.conn.Close()
}

// stapleStatus parses a stapled response for me; -1 when there is none.
func stapleStatus(t testing.TB, raw []byte, me *identity.Identity) int {
	t.Helper()
	if raw == nil {
		return -1
	}
	r, err := ocsp.ParseResponseForCert(raw, me.Leaf(), me.Chain[1])
	if err != nil {
		t.Fatalf("stapled response: %v", err)
	}
	return r.Status
}

// TestProxyOwnRevokedCertificateStaple: a proxy wired as `mutual proxy
// inbound` (watcher on the CA's feed, stapler) whose own certificate is
// revoked stops stapling "good" as soon as its watcher learns it, and
// staples the CA's "revoked" answer after.
func TestProxyOwnRevokedCertificateStaple(t *testing.T) {
	t.Parallel()
	e := startCA(t, "")
	src := e.proxyIdentity(t)
	me := src.Identity()
	w := &revocation.Watcher{CAURLs: []string{e.URL}, Source: src}
	st := &revocation.Stapler{Source: src, Revoked: w.Revoked}
	w.OnRevoke = st.Revoke
	pol, _ := authz.FromPatterns([]string{"spiffe://example.org/ns/prod/*"})
	p, err := proxy.NewInbound(proxy.InboundConfig{Target: testnet.Echo(t), SVID: src, Bundle: src, Policy: proxy.StaticPolicy{P: pol},
		PeerCheck: w.Check, Staple: st.Staple, Limits: proxy.Limits{DrainTimeout: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); w.Run(ctx) }()
	go func() { defer wg.Done(); st.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	addr := testnet.Run(t, p.Serve).Addr
	testwait.Eventually(t, w.FeedUp, "the watcher never connected to the feed")
	testwait.Eventually(t, func() bool { return st.Staple(me.Leaf()) != nil }, "no staple fetched")

	cl := e.Enroll(t, "spiffe://example.org/ns/prod/client", api.TokenRequest{})
	stapled := func() int {
		pc, err := dialProxy(t, addr, cl)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.conn.Close()
		return stapleStatus(t, pc.conn.ConnectionState().OCSPResponse, me)
	}
	if got := stapled(); got != ocsp.Good {
		t.Fatalf("staple before the revocation: %d, want good", got)
	}
	e.revoke(t, me.Leaf(), "keyCompromise")
	testwait.Eventually(t, func() bool { return w.Revoked(serialOf(me.Leaf())) }, "the watcher never learnt its own revocation")
	if got := stapled(); got == ocsp.Good {
		t.Fatal(`BUG: the proxy still staples "good" for its own revoked certificate`)
	}
	testwait.Eventually(t, func() bool { return stapled() == ocsp.Revoked }, `the CA's "revoked" answer was never stapled`)
}

// slowTarget is an echo backend whose accept queue can be held full, so
// that the proxy's dial to it hangs (the kernel drops its SYN) until
// release is called; the dial then completes at the next SYN retransmit
// (about a second later).
type slowTarget struct {
	addr    string
	filler  net.Conn
	ln      net.Listener
	release func()
}

func newSlowTarget(t testing.TB) *slowTarget {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("holds a listen queue full: Linux behaviour")
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	// Backlog 0: one connection waiting to be accepted fills the queue.
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "slow-target")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	st := &slowTarget{addr: ln.Addr().String(), ln: ln}
	if st.filler, err = net.Dial("tcp", st.addr); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	st.release = func() {
		once.Do(func() { testnet.ServeOn(t, ln, func(c net.Conn) { io.Copy(c, c) }) })
	}
	t.Cleanup(func() { ln.Close(); st.filler.Close() })
	return st
}

// dialled reports whether a socket of this host is connecting to the
// target (state SYN_SENT in /proc/net/tcp): a dial its full queue holds.
func (st *slowTarget) dialled(t testing.TB) bool {
	t.Helper()
	ap, err := netip.ParseAddrPort(st.addr)
	if err != nil {
		t.Fatal(err)
	}
	ip := ap.Addr().As4()
	want := fmt.Sprintf("%08X:%04X", binary.NativeEndian.Uint32(ip[:]), ap.Port())
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		// sl local_address rem_address st ...; st 02 is SYN_SENT.
		if f := strings.Fields(line); len(f) > 3 && f[2] == want && f[3] == "02" {
			return true
		}
	}
	return false
}

// TestProxyRevocationDuringTargetDial: a client completes its handshake,
// and its certificate is revoked while the proxy is still connecting to
// the target. The connection must not then go live: a revocation learnt
// after the handshake check and before the connection is tracked is
// otherwise lost, and the revoked client keeps a working connection.
func TestProxyRevocationDuringTargetDial(t *testing.T) {
	t.Parallel()
	e := startCA(t, "")
	src := e.proxyIdentity(t)
	target := newSlowTarget(t)
	g := startGuarded(t, src, target.addr, []string{e.URL}, 0)
	testwait.Eventually(t, g.watcher.FeedUp, "the watcher never connected to the feed")
	c := e.Enroll(t, "spiffe://example.org/ns/prod/client-late", api.TokenRequest{})

	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", g.addr, clientTLS(c, "127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Once the proxy is dialling the target (whose queue is full), it has
	// checked the certificate.
	testwait.Eventually(t, func() bool { return target.dialled(t) }, "the proxy never dialled the target")
	e.revoke(t, c.Leaf(), "keyCompromise")
	ev := g.closedFor(t, serialOf(c.Leaf()))
	t.Logf("the watcher learnt the revocation and closed %d connections while the proxy was dialling", ev.n)
	target.release()

	// The target now accepts. The revoked client's connection must fail.
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "am I still in?\n"); err == nil {
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err == nil {
			t.Fatalf("BUG: a client revoked while the proxy was dialling the target has a live connection (echo %q)", line)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("BUG: the revoked client's connection is still open after 10 s")
		}
	}
}
