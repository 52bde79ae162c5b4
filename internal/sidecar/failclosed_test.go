package sidecar_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/sidecar"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testport"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// TestNoAcceptBeforeRevocationStatus: an outbound and an inbound proxy
// whose CA (its CRL) cannot be reached yet hold their port but do not
// listen: a client meets "connection refused", never a connection
// accepted and then closed, and /readyz says why. Once the CRL is served
// the proxy listens (logging "proxy listening") and serves.
func TestNoAcceptBeforeRevocationStatus(t *testing.T) {
	for _, direction := range []string{"outbound", "inbound"} {
		t.Run(direction, func(t *testing.T) {
			dir, up := dirWithCRLDown(t, testca.New(t))
			cfg := sidecar.Config{Source: sidecar.Source{IdentityDir: dir}, Revocation: sidecar.Revocation{CRLInterval: 50 * time.Millisecond}}
			if direction == "outbound" {
				expect, err := authz.ParsePattern(webID)
				if err != nil {
					t.Fatal(err)
				}
				cfg.Outbound = &sidecar.Outbound{Target: testnet.Echo(t), Expect: []authz.Pattern{expect}}
			} else {
				allow, err := authz.FromPatterns([]string{webID})
				if err != nil {
					t.Fatal(err)
				}
				cfg.Inbound = &sidecar.Inbound{Target: testnet.Echo(t), Allow: allow, Mode: proxy.Strict, Protocol: proxy.TCP}
			}
			var logs *testlog.Buffer
			cfg.Log, logs = testlog.NewJSON(t, "sidecar")
			cfg.Listen, cfg.Metrics = testport.Addr(t), "127.0.0.1:0"
			waiting := runSidecarUntil(t, cfg, logs, "proxy waiting for the revocation status")
			base := strings.TrimSuffix(waiting["metrics"].(string), "/metrics")

			code, body := health(t, base, "/readyz")
			if code != http.StatusServiceUnavailable || !strings.Contains(body, "revocation status unknown") {
				t.Errorf("/readyz before the revocation status is known: %d %q, want 503 saying why", code, body)
			}
			c, err := net.Dial("tcp", cfg.Listen)
			if err == nil {
				c.Close()
				t.Fatalf("a client connected to the %s proxy before its revocation status was known; want connection refused", direction)
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("connecting before the revocation status is known: %v, want connection refused", err)
			}
			if record(logs, "proxy listening") != nil {
				t.Error(`"proxy listening" logged before the proxy listens`)
			}

			up.Store(true)
			waitRecord(t, logs, "proxy listening", nil)
			testwait.Eventually(t, func() bool {
				code, _ := health(t, base, "/readyz")
				return code == http.StatusOK
			}, "/readyz once the CRL is served")
			c, err = net.Dial("tcp", cfg.Listen)
			if err != nil {
				t.Fatalf("connecting once the revocation status is known: %v", err)
			}
			c.Close()
		})
	}
}

// TestListenAddressInUse: a port another process listens on fails the
// proxy at once, naming --listen, before it waits for anything.
func TestListenAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ca := testca.New(t)
	dir := dirWithCRL(t, ca, apiID, "http://127.0.0.1:1/crl/x.crl")
	expect, err := authz.ParsePattern(webID)
	if err != nil {
		t.Fatal(err)
	}
	err = sidecar.Run(context.Background(), sidecar.Config{Source: sidecar.Source{IdentityDir: dir}, Listen: ln.Addr().String(),
		Outbound: &sidecar.Outbound{Target: "127.0.0.1:1", Expect: []authz.Pattern{expect}}})
	if err == nil || !strings.Contains(err.Error(), "--listen") || !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Run on a port in use: %v, want an error naming --listen, address in use", err)
	}
}
