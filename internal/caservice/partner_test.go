package caservice_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/partnerfeed"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/testca"
)

const proxyService = "spiffe://example.org/ns/prod/proxy"

// partnerWorld is a CA with the partnership acme (reaching the proxy's
// service), one identity of acme's, and an inbound proxy's identity.
type partnerWorld struct {
	c       *testca.CA
	svc     *caservice.Service
	admin   *client.Client
	partner *identity.Identity
	src     *identity.DirSource
}

func newPartnerWorld(t *testing.T) *partnerWorld {
	ctx := context.Background()
	c := testca.New(t)
	svc, _ := run(t, options(c))
	admin := adminClient(t, svc)
	if _, err := admin.CreatePartner(ctx, api.PartnerRequest{Name: "acme", Roles: []string{"reader"}, EndsAt: time.Now().Add(24 * time.Hour),
		PartnerScope: api.PartnerScope{Services: []string{proxyService}}}); err != nil {
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
	proxyTok, err := admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: proxyService, IPAddresses: []string{"127.0.0.1"}})
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
	return &partnerWorld{c: c, svc: svc, admin: admin, partner: partner.Identity, src: src}
}

func (pw *partnerWorld) partnerTLS() *tls.Config {
	return &tls.Config{RootCAs: pki.CertPool([]*x509.Certificate{pw.c.Root}), Certificates: []tls.Certificate{pw.partner.TLSCertificate()}}
}

// echoes reports whether a new connection of the partner through the
// proxy at addr is served.
func (pw *partnerWorld) echoes(addr string) bool {
	c, err := tls.Dial("tcp", addr, pw.partnerTLS())
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4)
	_, werr := c.Write([]byte("ping"))
	_, rerr := io.ReadFull(c, buf)
	return werr == nil && rerr == nil && string(buf) == "ping"
}

// TestEndingAPartnershipClosesItsConnections: a partner's client, enrolled
// with a partner token, holds a connection through an inbound proxy that
// follows the CA's revocation feed. `partner end` closes that connection;
// new handshakes and renewals fail.
func TestEndingAPartnershipClosesItsConnections(t *testing.T) {
	ctx := context.Background()
	pw := newPartnerWorld(t)
	addr, _ := guardedProxy(t, pw.src, pw.svc.URL, "spiffe://example.org/partner/acme/*")

	conn, err := tls.Dial("tcp", addr, pw.partnerTLS())
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

	if _, err := pw.admin.EndPartner(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err = conn.Read(buf)
	if ne := net.Error(nil); err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the partner's connection stayed open after the partnership ended (read: %v)", err)
	}
	if pw.echoes(addr) {
		t.Error("a new connection of the ended partnership was served")
	}
	if _, err := client.RenewIdentity(ctx, pw.partner, []string{pw.svc.URL}, pki.KeyECDSAP256, 0); err == nil {
		t.Error("a certificate of the ended partnership renewed")
	}
}

// TestPartnerScopeAndLastSeenThroughTheCA: the proxy learns the scope from
// the CA and reports whom it saw; `partner show` then says what acme holds
// and where it was last seen, and a scope narrowed at the CA refuses the
// partner at the proxy's next report, although the proxy's own policy
// allows it.
func TestPartnerScopeAndLastSeenThroughTheCA(t *testing.T) {
	ctx := context.Background()
	pw := newPartnerWorld(t)
	addr, feed := guardedProxy(t, pw.src, pw.svc.URL, "spiffe://example.org/**")
	if !pw.echoes(addr) {
		t.Fatal("the partner was refused a service its scope names")
	}
	if err := feed.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := pw.admin.ShowPartner(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if d.Live != 1 || d.SoonestExpiry == nil || !d.SoonestExpiry.Equal(pw.partner.Leaf().NotAfter) {
		t.Errorf("holdings: %d live, soonest expiry %v; want 1, %v", d.Live, d.SoonestExpiry, pw.partner.Leaf().NotAfter)
	}
	if len(d.Sightings) != 1 || d.Sightings[0].SPIFFEID != pw.partner.ID.String() || d.Sightings[0].Proxy != proxyService ||
		d.LastSeen == nil || d.LastSeen.Proxy != proxyService {
		t.Errorf("sightings %+v, last seen %+v; want %s seen by %s", d.Sightings, d.LastSeen, pw.partner.ID, proxyService)
	}
	if list, err := pw.admin.ListPartners(ctx); err != nil || len(list.Partners) != 1 || list.Partners[0].LastSeen == nil || list.Partners[0].Live != 1 {
		t.Errorf("partner list: %+v (%v), want acme with 1 live certificate, seen", list, err)
	}

	if _, err := pw.admin.SetPartnerScope(ctx, "acme", api.PartnerScope{Services: []string{"spiffe://example.org/ns/prod/other"}}); err != nil {
		t.Fatal(err)
	}
	if !pw.echoes(addr) {
		t.Fatal("the proxy applied the new scope before learning it: the next check proves nothing")
	}
	if err := feed.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if pw.echoes(addr) {
		t.Error("the partner reached a service its narrowed scope no longer names")
	}
}

// TestSightingReportsAreAuthorized attacks the report endpoint: only a
// workload identity of this trust domain may report (a partner may not),
// and only sightings of partnerships' identities are recorded, under the
// reporter's own ID, never in the future.
func TestSightingReportsAreAuthorized(t *testing.T) {
	ctx := context.Background()
	pw := newPartnerWorld(t)
	as := func(id *identity.Identity) *client.Client {
		tc := id.TLSCertificate()
		cl, err := client.New([]string{pw.svc.URL}, id.Roots, &tc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.CloseIdleConnections)
		return cl
	}
	future := time.Now().Add(48 * time.Hour)
	report := api.SightingReport{Seen: []api.Seen{
		{SPIFFEID: pw.partner.ID.String(), At: future},
		{SPIFFEID: "spiffe://example.org/partner/nobody/x", At: time.Now()},
		{SPIFFEID: "spiffe://example.org/ns/prod/web", At: time.Now()},
		{SPIFFEID: "not an id", At: time.Now()},
	}}
	var ae *client.APIError
	if _, err := as(pw.partner).ReportPartners(ctx, report); !errors.As(err, &ae) || ae.Code != api.CodeWorkloadRequired {
		t.Errorf("a partner's report: %v, want %s", err, api.CodeWorkloadRequired)
	}
	nodeTok, err := pw.admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: "spiffe://example.org/node/n1"})
	if err != nil {
		t.Fatal(err)
	}
	node, err := client.RequestIdentity(ctx, nodeTok.Token, pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := as(node.Identity).ReportPartners(ctx, report); !errors.As(err, &ae) || ae.Code != api.CodeWorkloadRequired {
		t.Errorf("a node's report: %v, want %s", err, api.CodeWorkloadRequired)
	}
	reporter := enroll(t, pw.svc, "spiffe://example.org/ns/prod/gateway")
	got, err := as(reporter).ReportPartners(ctx, report)
	if err != nil {
		t.Fatal(err)
	}
	if got.Recorded != 1 || len(got.Partners) != 1 || got.Partners[0].Name != "acme" || got.Partners[0].Services[0] != proxyService {
		t.Errorf("answer %+v: want 1 recorded and acme's scope", got)
	}
	d, err := pw.admin.ShowPartner(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Sightings) != 1 || d.Sightings[0].Proxy != reporter.ID.String() || !d.Sightings[0].At.Before(future.Add(-time.Hour)) {
		t.Errorf("sightings %+v: want one, by %s, not in the future", d.Sightings, reporter.ID)
	}
}

// guardedProxy runs an inbound proxy in front of an echo server, allowing
// allow, whose revocation watcher follows the CA at caURL and closes the
// connections of revoked certificates, and whose partner feed has learnt
// the partnerships from the CA (as `mutual proxy inbound` wires them). The
// test calls the feed's Sync to report again.
func guardedProxy(t *testing.T, src *identity.DirSource, caURL, allow string) (string, *partnerfeed.Feed) {
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
	feed := &partnerfeed.Feed{CAURLs: []string{caURL}, Source: src}
	if err := feed.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	p, err := proxy.NewInbound(proxy.InboundConfig{Target: echo.Addr().String(), SVID: src, Bundle: src, Policy: proxy.StaticPolicy{P: pol},
		PeerCheck: w.Check, Partners: feed, Limits: proxy.Limits{DrainTimeout: time.Second}})
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
	return ln.Addr().String(), feed
}

// TestFullSightingReportIsAccepted: a proxy's report of api.MaxSightings
// distinct partner identities (as its feed gathers at most) fits the
// endpoint's body limit and is recorded; one more is refused with the
// count limit named.
func TestFullSightingReportIsAccepted(t *testing.T) {
	ctx := context.Background()
	pw := newPartnerWorld(t)
	reporter := enroll(t, pw.svc, "spiffe://example.org/ns/prod/gateway")
	tc := reporter.TLSCertificate()
	cl, err := client.New([]string{pw.svc.URL}, reporter.Roots, &tc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.CloseIdleConnections)
	var seen []api.Seen
	for i := range api.MaxSightings + 1 {
		seen = append(seen, api.Seen{SPIFFEID: fmt.Sprintf("spiffe://example.org/partner/acme/ns/production/sa/service-account-%04d", i), At: time.Now()})
	}
	got, err := cl.ReportPartners(ctx, api.SightingReport{Seen: seen[:api.MaxSightings]})
	if err != nil {
		t.Fatalf("a report of %d sightings: %v", api.MaxSightings, err)
	}
	if got.Recorded != api.MaxSightings {
		t.Errorf("recorded %d, want %d", got.Recorded, api.MaxSightings)
	}
	var ae *client.APIError
	if _, err := cl.ReportPartners(ctx, api.SightingReport{Seen: seen}); !errors.As(err, &ae) || !strings.Contains(err.Error(), "above the limit") {
		t.Errorf("a report of %d sightings: %v, want the count limit named", len(seen), err)
	}
}
