package diagnose

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	"golang.org/x/net/http2"
)

// probe is what one labelled, unverified handshake saw.
type probe struct {
	err          error
	state        tls.ConnectionState
	requested    bool
	acceptable   [][]byte
	sentCert     bool
	postAlert    error // an alert read right after the handshake (TLS 1.3 client-cert verdict)
	closedEarly  bool
	versionTried uint16
	peer         []*x509.Certificate // what the server presented, even when the handshake failed after
	http         *httpAnswer         // when the server speaks HTTP
}

// httpAnswer is the server's answer to the probe's one HTTP request.
type httpAnswer struct {
	status int
	body   string
	date   time.Time // the Date header, zero when absent
	auth   string    // WWW-Authenticate
}

// variant changes one thing of a probe, to compare the server's answers.
type variant struct {
	version   uint16   // only this TLS version; 0 means 1.2 and 1.3
	sni       *string  // this server name instead of Options.ServerName ("" sends none)
	alpn      []string // these protocols instead of Options.ALPN
	anonymous bool     // send no client certificate even when asked
	noHTTP    bool     // do not send an HTTP request after the handshake
}

func (d *diagnosis) alpn() []string {
	if d.o.ALPN != nil {
		return d.o.ALPN
	}
	return []string{"h2", "http/1.1"}
}

// dial connects over TCP.
func (d *diagnosis) dial(ctx context.Context) (net.Conn, error) {
	return (&net.Dialer{Timeout: d.o.Timeout}).DialContext(ctx, "tcp", net.JoinHostPort(d.host, d.port))
}

// connect dials and explains a failure to.
func (d *diagnosis) connect(ctx context.Context) (net.Conn, *Report) {
	r, o := d.r, d.o
	conn, err := d.dial(ctx)
	if err == nil {
		r.step("tcp", true, "connected to %s", conn.RemoteAddr())
		return conn, nil
	}
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		r.step("tcp", false, "connection refused")
		return nil, r.verdict(ConnectionRefused, fmt.Sprintf("nothing listens on %s (connection refused)", o.Addr),
			"start the service, or check the port; a firewall that rejects also looks like this")
	case errors.As(err, &ne) && ne.Timeout():
		r.step("tcp", false, "no answer within %s", o.Timeout)
		return nil, r.verdict(ConnectionTimeout, fmt.Sprintf("%s did not answer within %s", o.Addr, o.Timeout),
			"a firewall drops the packets, or the host is down or unreachable: check the route and the firewall")
	}
	r.step("tcp", false, "%v", err)
	return nil, r.verdict(ConnectionRefused, fmt.Sprintf("cannot connect to %s: %v", o.Addr, err), "check the address and the network path")
}

// probeAgain dials anew and runs a probe changed by v; nil when the
// connection cannot even be made.
func (d *diagnosis) probeAgain(ctx context.Context, v variant) *probe {
	conn, err := d.dial(ctx)
	if err != nil {
		return nil
	}
	return d.runProbe(ctx, conn, v)
}

// runProbe does the unverified handshake (InsecureSkipVerify, labelled:
// diagnosis only) and records what the server did.
func (d *diagnosis) runProbe(ctx context.Context, conn net.Conn, v variant) *probe {
	p := &probe{versionTried: v.version}
	tc := tls.Client(conn, d.probeConfig(p, v))
	defer tc.Close()
	hctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	if p.err = tc.HandshakeContext(hctx); p.err != nil {
		return p
	}
	p.state = tc.ConnectionState()
	switch {
	case v.noHTTP:
	case p.state.NegotiatedProtocol == "http/1.1" || p.state.NegotiatedProtocol == "h2":
		p.httpProbe(tc, d.o)
	default:
		p.readVerdict(tc, d.o)
	}
	return p
}

// probeConfig is the probe's client configuration: it records in p what
// the server sent and asked.
func (d *diagnosis) probeConfig(p *probe, v variant) *tls.Config {
	o := d.o
	cfg := &tls.Config{
		ServerName: o.ServerName,
		// DIAGNOSE PROBE ONLY: verification is skipped so that the probe can
		// see a certificate that would fail; the verdict comes from the
		// independent checks of serverChain, never from this handshake.
		InsecureSkipVerify: true, //nolint:gosec // labelled diagnose probe
		NextProtos:         d.alpn(),
		MinVersion:         tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error {
			p.peer = cs.PeerCertificates
			return nil
		},
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			p.requested = true
			p.acceptable = cri.AcceptableCAs
			if v.anonymous || len(o.ClientChain) == 0 || o.ClientKey == nil {
				return &tls.Certificate{}, nil
			}
			p.sentCert = true
			c := &tls.Certificate{PrivateKey: o.ClientKey, Leaf: o.ClientChain[0]}
			for _, x := range o.ClientChain {
				c.Certificate = append(c.Certificate, x.Raw)
			}
			return c, nil
		},
	}
	if v.sni != nil {
		cfg.ServerName = *v.sni
	}
	if v.alpn != nil {
		cfg.NextProtos = v.alpn
	}
	if v.version != 0 {
		cfg.MinVersion, cfg.MaxVersion = v.version, v.version
	}
	return cfg
}

// readVerdict waits briefly for what the server says after the handshake:
// in TLS 1.3 the server judges the client certificate after the client
// has finished, so its verdict, if negative, is the next thing to arrive.
func (p *probe) readVerdict(tc *tls.Conn, o Options) {
	tc.SetReadDeadline(time.Now().Add(min(o.Timeout, 700*time.Millisecond)))
	var b [1]byte
	_, err := tc.Read(b[:])
	var ne net.Error
	switch {
	case err == nil:
	case errors.As(err, &ne) && ne.Timeout():
	case isAlert(err):
		p.postAlert = err
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		p.closedEarly = true
	}
}

// httpProbe sends one request, so that an HTTP server (a mutual proxy in
// http mode) can state its verdict on the identity.
func (p *probe) httpProbe(tc *tls.Conn, o Options) {
	tc.SetDeadline(time.Now().Add(o.Timeout))
	method, path := o.Method, o.Path
	if method == "" {
		method = http.MethodGet
	}
	if path == "" {
		path = "/"
	}
	req, err := http.NewRequest(method, "https://"+o.ServerName+path, nil)
	if err != nil {
		return
	}
	req.Header.Set("User-Agent", "mutual-diagnose")
	var resp *http.Response
	if p.state.NegotiatedProtocol == "h2" {
		h2, err := (&http2.Transport{}).NewClientConn(tc)
		if err != nil {
			return
		}
		defer h2.Close()
		resp, err = h2.RoundTrip(req)
		if err != nil {
			p.noteHTTPError(err)
			return
		}
	} else {
		req.Close = true
		if err := req.Write(tc); err != nil {
			p.noteHTTPError(err)
			return
		}
		if resp, err = http.ReadResponse(bufio.NewReader(tc), req); err != nil {
			p.noteHTTPError(err)
			return
		}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	a := &httpAnswer{status: resp.StatusCode, body: string(body), auth: resp.Header.Get("WWW-Authenticate")}
	if t, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		a.date = t
	}
	p.http = a
}

func (p *probe) noteHTTPError(err error) {
	switch {
	case isAlert(err):
		p.postAlert = err
	default:
		// The server dropped the connection after the handshake (EOF, a
		// reset, an HTTP/2 connection lost).
		p.closedEarly = true
	}
}
