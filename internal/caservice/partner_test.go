package caservice_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/testca"
)

// TestEndingAPartnershipClosesItsConnections: a partner's client, enrolled
// with a partner token, holds a connection through an inbound proxy that
// follows the CA's revocation feed. `partner end` closes that connection;
// new handshakes and renewals fail.
func TestEndingAPartnershipClosesItsConnections(t *testing.T) {
	ctx := context.Background()
	c := testca.New(t)
	svc, _ := run(t, options(c))
	admin := adminClient(t, c, svc)
	if _, err := admin.CreatePartner(ctx, api.PartnerRequest{Name: "acme", Roles: []string{"reader"}, EndsAt: time.Now().Add(24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	tok, err := admin.PartnerToken(ctx, "acme", api.PartnerTokenRequest{Path: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	partner, err := client.RequestIdentity(ctx, tok.Token, pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	proxyTok, err := admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: "spiffe://example.org/ns/prod/proxy", IPAddresses: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	proxyID, err := client.RequestIdentity(ctx, proxyTok.Token, pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "proxy")
	if err := proxyID.Identity.Save(dir); err != nil {
		t.Fatal(err)
	}
	src, err := identity.NewDirSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	addr := guardedProxy(t, src, svc.URL, "spiffe://example.org/partner/acme/*")

	cfg := &tls.Config{RootCAs: pki.CertPool([]*x509.Certificate{c.Root}), Certificates: []tls.Certificate{partner.Identity.TLSCertificate()}}
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo through the proxy before the end: %q, %v", buf, err)
	}

	if _, err := admin.EndPartner(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err = conn.Read(buf)
	if ne := net.Error(nil); err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the partner's connection stayed open after the partnership ended (read: %v)", err)
	}
	if c2, err := tls.Dial("tcp", addr, cfg); err == nil {
		_, werr := c2.Write([]byte("ping"))
		_, rerr := io.ReadFull(c2, buf)
		c2.Close()
		if werr == nil && rerr == nil {
			t.Error("a new connection of the ended partnership was served")
		}
	}
	if _, err := client.RenewIdentity(ctx, partner.Identity, []string{svc.URL}, pki.KeyECDSAP256, 0); err == nil {
		t.Error("a certificate of the ended partnership renewed")
	}
}

// guardedProxy runs an inbound proxy in front of an echo server, allowing
// allow, whose revocation watcher follows the CA at caURL and closes the
// connections of revoked certificates (as `mutual proxy inbound` wires it).
func guardedProxy(t *testing.T, src *identity.DirSource, caURL, allow string) string {
	t.Helper()
	pol, err := authz.FromPatterns([]string{allow})
	if err != nil {
		t.Fatal(err)
	}
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &revocation.Watcher{CAURLs: []string{caURL}, Source: src, CRLInterval: time.Minute}
	p, err := proxy.NewInbound(proxy.InboundConfig{Target: echo.Addr().String(), SVID: src, Bundle: src, Policy: proxy.StaticPolicy{P: pol},
		PeerCheck: w.Check, Limits: proxy.Limits{DrainTimeout: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	w.OnRevoke = func(e revocation.Event) {
		p.CloseConnections(func(_ spiffeid.ID, serial string) bool { return serial == e.Serial })
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); w.Run(ctx) }()
	go func() { defer wg.Done(); p.Serve(ctx, ln) }()
	go func() {
		defer wg.Done()
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	t.Cleanup(func() { cancel(); echo.Close(); wg.Wait() })
	// The proxy admits no one until the watcher knows the revocation status.
	waitFor(t, "the proxy's watcher following the CA's feed", func() (bool, string) {
		err := w.Current()
		return err == nil, errString(err)
	})
	return ln.Addr().String()
}
