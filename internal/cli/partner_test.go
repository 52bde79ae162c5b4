package cli_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// TestPartnerThroughTheProxyCommand, as the README's "Federating with a
// partner" runs it: `mutual proxy inbound` learns acme's scope from the CA
// and lets acme's identity in; `partner list` says which proxy saw it;
// `partner scope` narrowing acme to another service closes acme's open
// connection through the tcp-mode proxy and refuses new ones.
func TestPartnerThroughTheProxyCommand(t *testing.T) {
	ctx := context.Background()
	env := testenv.StartCA(t, testenv.Options{})
	admin := []string{"--identity-dir", env.CA.AdminDir}
	mut := func(args ...string) (string, error) { return run(append(args, admin...)...) }
	const orders = "spiffe://example.org/ns/prod/orders"
	if out, err := mut("partner", "create", "acme", "--for", "24h", "--allow-service", orders); err != nil {
		t.Fatalf("partner create: %v\n%s", err, out)
	}
	tok, err := env.Admin.PartnerToken(ctx, "acme", api.PartnerTokenRequest{Path: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	partner, err := client.RequestIdentity(ctx, tok.Token, pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	proxyTok, err := env.Admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: orders, IPAddresses: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(proxyTok.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "orders")
	if out, err := run("cert", "request", "--token-file", tokFile, "--out", dir); err != nil {
		t.Fatalf("cert request: %v\n%s", err, out)
	}
	listen := freeAddr(t)
	p := startMutual(t, "proxy", "inbound", "--listen", listen, "--target", testnet.Echo(t), "--identity-dir", dir,
		"--allow", "spiffe://example.org/partner/acme/*")
	p.listening(t)

	cfg := &tls.Config{RootCAs: pki.CertPool(partner.Identity.Roots), Certificates: []tls.Certificate{partner.Identity.TLSCertificate()}}
	var conn *tls.Conn
	// The proxy refuses partners until it has heard from the CA.
	testwait.Eventually(t, func() bool {
		c, err := tls.Dial("tcp", listen, cfg)
		if err != nil {
			return false
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 4)
		if _, err := c.Write([]byte("ping")); err != nil {
			c.Close()
			return false
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			c.Close()
			return false
		}
		conn = c
		return true
	}, "acme's identity let through the proxy")
	defer conn.Close()

	if out, err := mut("partner", "scope", "acme", "--allow-service", "spiffe://example.org/ns/prod/other"); err != nil {
		t.Fatalf("partner scope: %v\n%s", err, out)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("acme's open connection outlived the narrowed scope by 30 s (read: %v)", err)
	}
	p.waitLog(t, "closed connections their scope no longer covers")
	if _, err := testnet.RoundTrip(listen, cfg, "ping"); err == nil {
		t.Error("a new connection of acme's reached a service its scope no longer names")
	}
	out, err := mut("partner", "list")
	t.Logf("partner list:\n%s", out)
	if err != nil || !strings.Contains(out, "by "+orders+" (spiffe://example.org/partner/acme/billing)") {
		t.Errorf("partner list does not say the proxy saw acme: %v\n%s", err, out)
	}
	out, err = mut("partner", "show", "acme")
	if err != nil || !strings.Contains(out, "Holds: 1 live certificate(s)") || !strings.Contains(out, "spiffe://example.org/partner/acme/billing  "+orders) {
		t.Errorf("partner show does not say what acme holds and where it was seen: %v\n%s", err, out)
	}
	t.Logf("partner show:\n%s", out)

	// A partnership reaching every service is what `mutual audit` flags.
	if out, err := mut("partner", "scope", "acme", "--allow-service", "spiffe://example.org/**"); err != nil {
		t.Fatalf("partner scope: %v\n%s", err, out)
	}
	out, _ = run("audit", "--ca", env.CA.Dir, "--ca-url", env.URL)
	if !strings.Contains(out, "partner-scope-broad") || !strings.Contains(out, "partnership acme") {
		t.Errorf("audit does not flag acme reaching every service:\n%s", out)
	}
}
