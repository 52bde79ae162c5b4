package proxy_test

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	spiffetlsconfig "github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testwait"
	"github.com/mutual-tls/mutual/tlsconfig"
)

// namelessInbound runs an inbound proxy (TCP, echo backend, allowing the
// outbound proxy's identity) whose certificate for id carries no DNS or IP
// name, as a service enrolled with a plain join token has.
func namelessInbound(t *testing.T, w *world, id string) *proxyRun {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "nameless")
	idn := w.ca.Leaf(t, id)
	if n := len(idn.Leaf().DNSNames) + len(idn.Leaf().IPAddresses); n != 0 {
		t.Fatalf("test setup: the certificate of %s carries %d names", id, n)
	}
	if err := idn.Save(dir); err != nil {
		t.Fatal(err)
	}
	src, err := identity.NewDirSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := authz.FromPatterns([]string{outID})
	if err != nil {
		t.Fatal(err)
	}
	return runInbound(t, w, proxy.InboundConfig{Target: testnet.Echo(t), Protocol: proxy.TCP, SVID: src, Bundle: src, Policy: proxy.StaticPolicy{P: pol}})
}

// outboundWith builds an outbound proxy with the outbound identity and cfg
// (Target, Expect, ServerName, Bundle as given), serving on loopback.
func outboundWith(t *testing.T, w *world, cfg proxy.OutboundConfig, logs io.Writer) *outboundRun {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "out")
	if err := w.ca.Leaf(t, outID).Save(dir); err != nil {
		t.Fatal(err)
	}
	src, err := identity.NewDirSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.SVID = src
	if cfg.Bundle == nil {
		cfg.Bundle = src
	}
	cfg.Limits.DrainTimeout = 2 * time.Second
	if logs != nil {
		cfg.Log = slog.New(slog.NewJSONHandler(logs, nil))
	}
	o, err := proxy.NewOutbound(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &outboundRun{addr: testnet.Run(t, o.Serve).Addr, o: o}
}

func patterns(t *testing.T, ss ...string) []authz.Pattern {
	t.Helper()
	var out []authz.Pattern
	for _, s := range ss {
		p, err := authz.ParsePattern(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// TestOutboundReachesServerWithoutNames is issue 25: a service whose
// certificate names no host (enrolled with a plain join token) behind an
// inbound proxy is reached through an outbound proxy that expects its exact
// SPIFFE ID; the same chain with another ID, or a --server-name the
// certificate lacks, is refused.
func TestOutboundReachesServerWithoutNames(t *testing.T) {
	w := newWorld(t)
	in := namelessInbound(t, w, dbID)

	t.Run("exact expect, no server name: works", func(t *testing.T) {
		out := outboundWith(t, w, proxy.OutboundConfig{Target: in.addr, Expect: patterns(t, dbID)}, nil)
		if got, err := testnet.RoundTrip(out.addr, nil, "hello"); err != nil || got != "hello" {
			t.Fatalf("round trip = %q, %v; want the echo", got, err)
		}
		tc, err := out.o.Dial(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		if id, _ := tlsconfig.PeerID(tc.ConnectionState()); id.String() != dbID {
			t.Errorf("server = %s, want %s", id, dbID)
		}
	})
	t.Run("right chain, another ID: refused", func(t *testing.T) {
		other := namelessInbound(t, w, "spiffe://example.org/ns/prod/cache")
		logs := &testlog.Buffer{}
		out := outboundWith(t, w, proxy.OutboundConfig{Target: other.addr, Expect: patterns(t, dbID)}, logs)
		if got, err := testnet.RoundTrip(out.addr, nil, "x"); err == nil {
			t.Fatalf("round trip = %q; want refused", got)
		}
		_, err := out.o.Dial(context.Background())
		var pe *tlsconfig.PeerError
		if !errors.As(err, &pe) || pe.Reason != tlsconfig.ReasonNotAuthorized {
			t.Fatalf("Dial = %v; want not authorized", err)
		}
		testwait.Eventually(t, func() bool {
			return logs.Has("server refused", map[string]any{"reason": tlsconfig.ReasonNotAuthorized.String()})
		}, "the refusal logged")
	})
	t.Run("--server-name absent from the certificate: refused", func(t *testing.T) {
		logs := &testlog.Buffer{}
		out := outboundWith(t, w, proxy.OutboundConfig{Target: in.addr, ServerName: "db.example.org", Expect: patterns(t, dbID)}, logs)
		if got, err := testnet.RoundTrip(out.addr, nil, "x"); err == nil {
			t.Fatalf("round trip = %q; want refused", got)
		}
		_, err := out.o.Dial(context.Background())
		var he x509.HostnameError
		if !errors.As(err, &he) || he.Host != "db.example.org" {
			t.Fatalf("Dial = %v; want a name mismatch", err)
		}
		testwait.Eventually(t, func() bool {
			return logs.Has("server refused", map[string]any{"reason": tlsconfig.ReasonNameMismatch.String()})
		}, "the refusal logged")
	})
	t.Run("another root with the same ID: refused", func(t *testing.T) {
		evil := newWorld(t) // its own CA, same trust domain name
		imp := namelessInbound(t, evil, dbID)
		out := outboundWith(t, w, proxy.OutboundConfig{Target: imp.addr, Expect: patterns(t, dbID)}, nil)
		_, err := out.o.Dial(context.Background())
		var pe *tlsconfig.PeerError
		if !errors.As(err, &pe) || pe.Reason != tlsconfig.ReasonUnknownAuthority {
			t.Fatalf("Dial = %v; want unknown authority", err)
		}
	})
	t.Run("broad --expect without --server-name is warned about", func(t *testing.T) {
		logs := &testlog.Buffer{}
		outboundWith(t, w, proxy.OutboundConfig{Target: in.addr, Expect: patterns(t, "spiffe://example.org/**")}, logs)
		if !logs.Has("--expect accepts a whole namespace of the trust domain as the server, and no --server-name is checked: any such workload (or node) certificate would be accepted as "+in.addr, nil) {
			t.Errorf("no warning for a broad --expect:\n%s", logs)
		}
	})
}

// TestBroadExpectation: which --expect patterns leave the top of the trust
// domain open.
func TestBroadExpectation(t *testing.T) {
	for s, want := range map[string]bool{
		"spiffe://example.org/**":         true,
		"spiffe://example.org/*":          true,
		"spiffe://example.org/*/db":       true,
		"spiffe://example.org/ns/prod/db": false,
		"spiffe://example.org/ns/prod/*":  false,
		"spiffe://example.org/ns/**":      false,
		"spiffe://example.org/node/**":    false,
	} {
		if got := proxy.BroadExpectation(patterns(t, s)[0]); got != want {
			t.Errorf("BroadExpectation(%s) = %v, want %v", s, got, want)
		}
	}
}

// TestOutboundReachesGoSPIFFEServer: a server built with go-spiffe's
// spiffetls, presenting an SVID without any DNS name (as SPIRE issues
// them), is reached by mutual's outbound proxy; in its own trust domain and
// in a federated one.
func TestOutboundReachesGoSPIFFEServer(t *testing.T) {
	w := newWorld(t)
	outSID := mustID(t, outID)
	serve := func(t *testing.T, ca *testca.CA, id string, bundle x509bundle.Source) string {
		t.Helper()
		idn := ca.Leaf(t, id)
		if len(idn.Leaf().DNSNames)+len(idn.Leaf().IPAddresses) != 0 {
			t.Fatal("test setup: the SVID carries names")
		}
		svid := &x509svid.SVID{ID: idn.ID, Certificates: idn.Chain, PrivateKey: idn.Key}
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		ln, err := spiffetls.ListenWithMode(ctx, "tcp", "127.0.0.1:0",
			spiffetls.MTLSServerWithRawConfig(spiffetlsconfig.AuthorizeID(outSID), svid, bundle))
		if err != nil {
			t.Fatal(err)
		}
		testnet.ServeOn(t, ln, func(c net.Conn) { io.Copy(c, c) })
		return ln.Addr().String()
	}
	own := x509bundle.FromX509Authorities(w.ca.TrustDomain, []*x509.Certificate{w.ca.Root})

	t.Run("same trust domain", func(t *testing.T) {
		addr := serve(t, w.ca, dbID, own)
		out := outboundWith(t, w, proxy.OutboundConfig{Target: addr, Expect: patterns(t, dbID)}, nil)
		if got, err := testnet.RoundTrip(out.addr, nil, "hello spire"); err != nil || got != "hello spire" {
			t.Fatalf("round trip = %q, %v", got, err)
		}
	})
	t.Run("federated trust domain", func(t *testing.T) {
		spire := testca.New(t, testca.WithTrustDomain("spire.example"))
		spireID := "spiffe://spire.example/ns/prod/db"
		set := x509bundle.NewSet(own, x509bundle.FromX509Authorities(spire.TrustDomain, []*x509.Certificate{spire.Root}))
		addr := serve(t, spire, spireID, set)
		out := outboundWith(t, w, proxy.OutboundConfig{Target: addr, Expect: patterns(t, spireID), Bundle: set}, nil)
		if got, err := testnet.RoundTrip(out.addr, nil, "hello spire"); err != nil || got != "hello spire" {
			t.Fatalf("round trip = %q, %v", got, err)
		}
		// The same server, expected under its own name but not federated: refused.
		noFed := outboundWith(t, w, proxy.OutboundConfig{Target: addr, Expect: patterns(t, spireID)}, nil)
		_, err := noFed.o.Dial(context.Background())
		var pe *tlsconfig.PeerError
		if !errors.As(err, &pe) || pe.Reason != tlsconfig.ReasonUnknownAuthority {
			t.Fatalf("Dial without the federated bundle = %v; want unknown authority", err)
		}
	})
}
