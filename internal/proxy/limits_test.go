package proxy_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testwait"
	"github.com/mutual-tls/mutual/tlsconfig"
)

// TestInboundIdleTimeout: a connection with no traffic either way is closed.
func TestInboundIdleTimeout(t *testing.T) {
	w := newWorld(t)
	client := w.ca.Leaf(t, webID)
	for _, protocol := range []proxy.Protocol{proxy.TCP, proxy.HTTP} {
		t.Run(string(protocol), func(t *testing.T) {
			target := backendFor(t, protocol)
			r := runInbound(t, w, proxy.InboundConfig{Target: target, Protocol: protocol, Limits: proxy.Limits{IdleTimeout: 300 * time.Millisecond}})
			c, err := tls.Dial("tcp", r.addr, w.clientTLS(client, "http/1.1"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			rc := &rawConn{Conn: c, br: bufio.NewReader(c)}
			if err := ping(rc, protocol); err != nil {
				t.Fatal(err)
			}
			if err := closedByProxy(c); err != nil {
				t.Fatalf("idle connection: %v", err)
			}
			testwait.Eventually(t, func() bool { return r.p.Active() == 0 }, "connection released")
		})
	}
}

// TestInboundTargetUnreachable: tcp closes the client's connection, http
// answers 502; both say so in the log.
func TestInboundTargetUnreachable(t *testing.T) {
	w := newWorld(t)
	ln := testnet.Listen(t)
	dead := ln.Addr().String()
	ln.Close() // nothing listens there now
	client := w.ca.Leaf(t, webID)
	t.Run("tcp", func(t *testing.T) {
		r := runInbound(t, w, proxy.InboundConfig{Target: dead})
		if got, err := testnet.RoundTrip(r.addr, w.clientTLS(client), "x"); err == nil {
			t.Errorf("round trip = %q; want the connection closed", got)
		}
		testwait.Eventually(t, func() bool {
			return metricValue(t, r.reg, "mutual_proxy_connections_total", map[string]string{"outcome": "target_unreachable"}) == 1 &&
				r.logs.Has("target unreachable", map[string]any{"peer_id": webID, "target": dead})
		}, "counted and logged")
	})
	t.Run("http", func(t *testing.T) {
		r := runInbound(t, w, proxy.InboundConfig{Target: dead, Protocol: proxy.HTTP})
		res := getOnce(w.clientTLS(client), "https://"+r.addr+"/")
		if res.err != nil || res.code != http.StatusBadGateway || !strings.Contains(res.body, "unreachable") {
			t.Errorf("request = %d %q, %v; want 502", res.code, res.body, res.err)
		}
		testwait.Eventually(t, func() bool { return r.logs.Has("target unreachable", map[string]any{"target": dead}) }, "logged")
	})
}

// TestInboundPeerCheck: the revocation hook refuses a verified peer, with
// its reason, in both protocols and modes.
func TestInboundPeerCheck(t *testing.T) {
	w := newWorld(t)
	revoked, good := w.ca.Leaf(t, webID), w.ca.Leaf(t, webID)
	serial := revoked.Leaf().SerialNumber
	check := func(id spiffeid.ID, chain []*x509.Certificate) error {
		if chain[0].SerialNumber.Cmp(serial) == 0 {
			return &tlsconfig.PeerError{Reason: tlsconfig.ReasonRevoked, ID: id, Cert: chain[0], Err: errors.New("revoked by the admin")}
		}
		return nil
	}
	plain := func(id spiffeid.ID, chain []*x509.Certificate) error {
		if chain[0].SerialNumber.Cmp(serial) == 0 {
			return errors.New("not in the allow list of serials")
		}
		return nil
	}
	for _, tt := range []struct {
		name   string
		check  func(spiffeid.ID, []*x509.Certificate) error
		reason string
	}{
		{"PeerError", check, "revoked"},
		{"plain error", plain, "bad certificate"},
	} {
		for _, protocol := range []proxy.Protocol{proxy.TCP, proxy.HTTP} {
			for _, mode := range []proxy.Mode{proxy.Strict, proxy.Permissive} {
				t.Run(tt.name+"/"+string(protocol)+"/"+string(mode), func(t *testing.T) {
					target := backendFor(t, protocol)
					r := runInbound(t, w, proxy.InboundConfig{Target: target, Protocol: protocol, Mode: mode, PeerCheck: tt.check})
					ok := func(id *identity.Identity) bool {
						if protocol == proxy.TCP {
							got, err := testnet.RoundTrip(r.addr, w.clientTLS(id), "x")
							return err == nil && got == "x"
						}
						res := getOnce(w.clientTLS(id), "https://"+r.addr+"/")
						return res.err == nil && res.code == 200
					}
					if ok(revoked) {
						t.Error("the revoked certificate got through")
					}
					if !ok(good) {
						t.Error("another certificate of the same identity was refused")
					}
					labels := map[string]string{"reason": tt.reason}
					testwait.Eventually(t, func() bool { return metricValue(t, r.reg, "mutual_proxy_handshake_refusals_total", labels) == 1 }, "refusal counted")
				})
			}
		}
	}
}

// TestInboundTLSVersions: TLS 1.3 only unless TLS12 is set.
func TestInboundTLSVersions(t *testing.T) {
	w := newWorld(t)
	client := w.ca.Leaf(t, webID)
	echo := testnet.Echo(t)
	for _, tt := range []struct {
		tls12  bool
		client uint16
		ok     bool
	}{
		{false, tls.VersionTLS13, true},
		{false, tls.VersionTLS12, false},
		{true, tls.VersionTLS12, true},
		{true, tls.VersionTLS13, true},
		{true, tls.VersionTLS11, false},
	} {
		t.Run(tls.VersionName(tt.client)+map[bool]string{true: "/tls12 on", false: "/tls12 off"}[tt.tls12], func(t *testing.T) {
			r := runInbound(t, w, proxy.InboundConfig{Target: echo, TLS12: tt.tls12})
			cfg := w.clientTLS(client)
			cfg.MinVersion, cfg.MaxVersion = tt.client, tt.client
			got, err := testnet.RoundTrip(r.addr, cfg, "x")
			if (err == nil && got == "x") != tt.ok {
				t.Fatalf("round trip = %q, %v; want ok=%v", got, err, tt.ok)
			}
			if !tt.ok {
				labels := map[string]string{"reason": "protocol mismatch"}
				testwait.Eventually(t, func() bool { return metricValue(t, r.reg, "mutual_proxy_handshake_refusals_total", labels) == 1 }, "refusal counted")
			}
		})
	}
	// With TLS 1.2 a refused client certificate fails the client's own handshake.
	r := runInbound(t, w, proxy.InboundConfig{Target: echo, TLS12: true})
	cfg := w.clientTLS(w.ca.Leaf(t, dbID))
	cfg.MaxVersion = tls.VersionTLS12
	if _, err := tls.Dial("tcp", r.addr, cfg); err == nil {
		t.Error("a denied TLS 1.2 client completed its handshake")
	}
}

func TestMigrationReport(t *testing.T) {
	var nilReport *proxy.MigrationReport
	nilReport.Record(&net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 1}, "plaintext") // no panic

	m := proxy.NewMigrationReport()
	clock := time.Now()
	m.SetNow(func() time.Time { return clock })
	a := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 1000}
	b := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 2000} // same host, other port
	c := &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 3000}
	m.Record(a, "plaintext")
	m.Record(b, "plaintext")
	m.Record(a, "no-certificate")
	clock = clock.Add(time.Second) // a later LastSeen for the ordering check
	m.Record(c, "no-certificate")
	snap := m.Snapshot()
	if len(snap) != 3 {
		t.Fatalf("snapshot = %+v; want 3 sources (host and kind)", snap)
	}
	if snap[0].Source != "2001:db8::1" {
		t.Errorf("most recent first: %+v", snap)
	}
	for _, s := range snap {
		if s.Source == "10.0.0.1" && s.Kind == "plaintext" && s.Count != 2 {
			t.Errorf("ports are merged per host: %+v", s)
		}
		if s.FirstSeen.IsZero() || s.LastSeen.Before(s.FirstSeen) {
			t.Errorf("times: %+v", s)
		}
	}
	rec := httptest.NewRecorder()
	m.ServeHTTP(rec, httptest.NewRequest("GET", "/migration", nil))
	var body struct {
		Since   time.Time               `json:"since"`
		Total   int64                   `json:"without_certificate_total"`
		Sources []proxy.MigrationSource `json:"sources"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if rec.Header().Get("Content-Type") != "application/json" || body.Total != 4 || len(body.Sources) != 3 || body.Since.IsZero() {
		t.Errorf("GET /migration = %s %s", rec.Header().Get("Content-Type"), rec.Body)
	}
	// Bounded: an address scan does not grow it without limit.
	big := proxy.NewMigrationReport()
	for i := range 10050 {
		big.Record(&net.TCPAddr{IP: net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)), Port: 1}, "plaintext")
	}
	if n := len(big.Snapshot()); n != 10000 {
		t.Errorf("%d sources kept, want the bound 10000", n)
	}
}

// TestInboundStreaming: a streamed response (server-sent events) reaches the
// client piece by piece: the service writes its second event only after the
// client has read the first, so buffering in the proxy would hang.
func TestInboundStreaming(t *testing.T) {
	w := newWorld(t)
	next := make(chan struct{})
	backend := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(rw, "data: %d\n\n", i)
			http.NewResponseController(rw).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			case <-time.After(10 * time.Second):
				return
			}
		}
	}))
	defer backend.Close()
	r := runInbound(t, w, proxy.InboundConfig{Target: backend.Listener.Addr().String(), Protocol: proxy.HTTP})
	for _, h2 := range []bool{true, false} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			cfg := w.clientTLS(w.ca.Leaf(t, webID))
			tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: h2}
			if !h2 {
				tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Get("https://" + r.addr + "/events")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			for i := range 3 {
				line, err := br.ReadString('\n')
				if err != nil || line != fmt.Sprintf("data: %d\n", i) {
					t.Fatalf("event %d: %q, %v", i, line, err)
				}
				br.ReadString('\n')
				next <- struct{}{}
			}
		})
	}
}

// TestOutboundCloseConnections: the revocation hook of the outbound proxy
// cuts its tunnel to a matching server.
func TestOutboundCloseConnections(t *testing.T) {
	w := newWorld(t)
	in := inboundForOutbound(t, w, proxy.TCP, testnet.Echo(t))
	out := runOutbound(t, w, in.addr, proxyID)
	c, err := net.Dial("tcp", out.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	rc := &rawConn{Conn: c, br: bufio.NewReader(c)}
	if err := ping(rc, proxy.TCP); err != nil {
		t.Fatal(err)
	}
	if n := out.o.CloseConnections(func(id spiffeid.ID, _ string) bool { return id.String() == dbID }); n != 0 {
		t.Errorf("closed %d connections to another server", n)
	}
	if n := out.o.CloseConnections(func(id spiffeid.ID, _ string) bool { return id.String() == proxyID }); n != 1 {
		t.Errorf("closed %d connections, want 1", n)
	}
	if err := closedByProxy(c); err != nil {
		t.Error(err)
	}
}

func TestMetricsCertificateExpiry(t *testing.T) {
	w := newWorld(t)
	reg := prometheus.NewRegistry()
	m := proxy.NewMetrics(reg, "inbound")
	leaf := w.src.Identity().Leaf()
	m.ObserveCertificate(leaf)
	if got := metricValue(t, reg, "mutual_proxy_certificate_expiry_timestamp_seconds", map[string]string{"direction": "inbound"}); got != float64(leaf.NotAfter.Unix()) {
		t.Errorf("expiry gauge = %v, want %d", got, leaf.NotAfter.Unix())
	}
	var none *proxy.Metrics
	none.ObserveCertificate(leaf) // nil metrics are allowed everywhere
	none.PolicyReloaded(true)
}
