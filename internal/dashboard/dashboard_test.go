package dashboard_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/dashboard"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
)

// TestPagesRender: every page answers 200 with the strict headers, shows
// the CA's data, and never a token's secret.
func TestPagesRender(t *testing.T) {
	e := newEnv(t)
	web := e.enroll(t, "spiffe://example.org/ns/prod/web")
	e.enroll(t, "spiffe://example.org/node/n1")
	gone := e.enroll(t, "spiffe://example.org/ns/prod/old")
	if _, err := e.cl.Revoke(context.Background(), api.RevokeRequest{Serial: gone, Reason: "superseded"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cl.CreateEntry(context.Background(), api.EntryRequest{SPIFFEID: "spiffe://example.org/ns/prod/db",
		Nodes: []string{"spiffe://example.org/node/*"}, Selectors: []string{"unix:uid:1001"}}); err != nil {
		t.Fatal(err)
	}
	secret, err := e.cl.CreateToken(context.Background(), api.TokenRequest{SPIFFEID: "spiffe://example.org/ns/prod/api"})
	if err != nil {
		t.Fatal(err)
	}
	other := testca.New(t, testca.WithTrustDomain("partner.example"))
	if _, err := e.cl.AddFederation(context.Background(), api.FederationRequest{TrustDomain: "partner.example", EndpointURL: "https://127.0.0.1:1/bundle",
		Profile: "https_spiffe", EndpointSPIFFEID: "spiffe://partner.example/spire/server", Bundle: string(pki.EncodeCertificates(other.Root))}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cl.CreatePartner(context.Background(), api.PartnerRequest{Name: "acme", Roles: []string{"billing"}, EndsAt: time.Now().Add(24 * time.Hour),
		PartnerScope: api.PartnerScope{Services: []string{"spiffe://example.org/ns/prod/orders"}}}); err != nil {
		t.Fatal(err)
	}
	// A monitor's finding, whose evidence carries markup: shown as text.
	if err := e.cl.ReportFindings(context.Background(), api.FindingsReport{Findings: []api.Finding{{Rule: "unexplained_identity", LogIndex: 4,
		SPIFFEID: "spiffe://example.org/ns/rogue", Serial: web, Detail: "unknown token <script>alert(1)</script>"}}}); err != nil {
		t.Fatal(err)
	}
	hc := browser(t)
	for path, want := range map[string][]string{
		"/federation":                  {"partner.example", "https://127.0.0.1:1/bundle", "1 key(s)", "acme", "spiffe://example.org/partner/acme/", "billing"},
		"/":                            {"Live certificates", "workload", "node", "CA health", gone, "superseded", "<svg", "ok", "Monitor alerts", "unexplained_identity", "spiffe://example.org/ns/rogue"},
		"/certificates":                {web, gone, "spiffe://example.org/ns/prod/web"},
		"/certificates?status=revoked": {gone},
		"/certificates?q=" + web:       {web, "serial " + web},
		"/certificates?q=n1":           {"node spiffe://example.org/node/n1"},
		"/certificates/" + web:         {"spiffe://example.org/ns/prod/web", "digitalSignature", "Revoke this certificate", `name="csrf"`},
		"/identities":                  {"spiffe://example.org/ns/prod/db", "unix:uid:1001", secret.ID, "spiffe://example.org/ns/prod/api"},
		"/nodes":                       {"spiffe://example.org/node/n1", "spiffe://example.org/ns/prod/db"},
		"/log":                         {"Signed checkpoint", "Size", "Monitor findings (1)", "#4", "unknown token &lt;script&gt;alert(1)&lt;/script&gt;", "spiffe://example.org/admin/"},
		"/static/style.css":            {"--accent"},
		"/certificates?q=spiffe://example.org/ns/prod/old&status=valid": {"No certificate matches"},
	} {
		status, body, h := get(t, hc, e.base+path)
		if status != http.StatusOK {
			t.Errorf("GET %s: %d\n%s", path, status, body)
			continue
		}
		for _, w := range want {
			if !strings.Contains(body, w) {
				t.Errorf("GET %s: no %q in the page", path, w)
			}
		}
		if strings.Contains(body, "<script") {
			t.Errorf("GET %s renders a <script> element", path)
		}
		if strings.Contains(body, secret.Token) {
			t.Errorf("GET %s renders a join token's secret", path)
		}
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "script-src") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
		if h.Get("X-Frame-Options") != "DENY" || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: framing/sniffing headers %v", path, h)
		}
	}
}

// TestRevokeThroughTheUI: the certificate page's form revokes at the CA,
// only once confirmed.
func TestRevokeThroughTheUI(t *testing.T) {
	e := newEnv(t)
	serial := e.enroll(t, "spiffe://example.org/ns/prod/web")
	hc := browser(t)
	_, page, _ := get(t, hc, e.base+"/certificates/"+serial)
	token := csrfOf(t, page)
	action := e.base + "/certificates/" + serial + "/revoke"
	same := map[string]string{"Origin": e.base, "Sec-Fetch-Site": "same-origin"}

	status, body, _ := post(t, hc, action, url.Values{"csrf": {token}, "reason": {"keyCompromise"}}, same)
	if status != http.StatusBadRequest || !strings.Contains(body, "tick the confirmation box") || e.revoked(t, serial) {
		t.Fatalf("an unconfirmed revocation: %d, revoked %v\n%s", status, e.revoked(t, serial), body)
	}
	status, _, loc := post(t, hc, action, url.Values{"csrf": {token}, "reason": {"keyCompromise"}, "confirm": {"yes"}}, same)
	if status != http.StatusSeeOther || !e.revoked(t, serial) {
		t.Fatalf("a confirmed revocation: %d, revoked %v", status, e.revoked(t, serial))
	}
	_, page, _ = get(t, hc, e.base+loc)
	if !strings.Contains(page, "Revoked.") || !strings.Contains(page, "keyCompromise") || strings.Contains(page, "Revoke this certificate") {
		t.Errorf("the page after revoking:\n%s", page)
	}
}

// TestForgedPostsRefused: a cross-site POST, and a POST without this
// session's token, revoke nothing, even with the victim's cookie.
func TestForgedPostsRefused(t *testing.T) {
	e := newEnv(t)
	serial := e.enroll(t, "spiffe://example.org/ns/prod/web")
	victim := browser(t)
	_, page, _ := get(t, victim, e.base+"/certificates/"+serial)
	token := csrfOf(t, page)
	other := browser(t)
	_, otherPage, _ := get(t, other, e.base+"/certificates/"+serial)
	otherToken := csrfOf(t, otherPage)
	action := e.base + "/certificates/" + serial + "/revoke"
	form := func(tok string) url.Values {
		v := url.Values{"reason": {"keyCompromise"}, "confirm": {"yes"}}
		if tok != "" {
			v.Set("csrf", tok)
		}
		return v
	}
	for name, c := range map[string]struct {
		hc      *http.Client
		form    url.Values
		headers map[string]string
	}{
		"cross-site fetch with the right token": {victim, form(token), map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}},
		"foreign Origin with the right token":   {victim, form(token), map[string]string{"Origin": "https://evil.example"}},
		"same-site sibling with the token":      {victim, form(token), map[string]string{"Sec-Fetch-Site": "same-site"}},
		"no token":                              {victim, form(""), map[string]string{"Origin": e.base}},
		"wrong token":                           {victim, form("AAAA" + token[4:]), map[string]string{"Origin": e.base}},
		"another session's token":               {victim, form(otherToken), map[string]string{"Origin": e.base}},
		"the token without the session cookie":  {browser(t), form(token), map[string]string{"Origin": e.base}},
	} {
		status, body, _ := post(t, c.hc, action, c.form, c.headers)
		if status != http.StatusForbidden || !strings.Contains(body, "Refused") {
			t.Errorf("%s: %d\n%s", name, status, body)
		}
		if e.revoked(t, serial) {
			t.Fatalf("%s: revoked the certificate", name)
		}
	}
}

// TestMarkupIsText: a search term and an entry's selector holding markup
// are rendered as text.
func TestMarkupIsText(t *testing.T) {
	e := newEnv(t)
	const xss = `<script>alert(1)</script>`
	if _, err := e.cl.CreateEntry(context.Background(), api.EntryRequest{SPIFFEID: "spiffe://example.org/ns/prod/db",
		Nodes: []string{"spiffe://example.org/node/*"}, Selectors: []string{"unix:path:/opt/" + xss}}); err != nil {
		t.Fatal(err)
	}
	hc := browser(t)
	for _, path := range []string{"/certificates?q=" + url.QueryEscape(xss), "/certificates?q=" + url.QueryEscape(`spiffe://example.org/"><img src=x>`), "/identities"} {
		_, body, _ := get(t, hc, e.base+path)
		if strings.Contains(body, "<script>") || strings.Contains(body, "<img src=x>") {
			t.Errorf("GET %s renders markup from data:\n%s", path, body)
		}
		if !strings.Contains(body, "&lt;script&gt;") && !strings.Contains(body, "&lt;img") {
			t.Errorf("GET %s: the markup is not shown as text", path)
		}
	}
}

// TestNonAdminRefusedByTheCA: a dashboard holding a workload's identity
// gets nothing from the CA, and says why.
func TestNonAdminRefusedByTheCA(t *testing.T) {
	e := newEnv(t)
	e.enroll(t, "spiffe://example.org/ns/prod/web")
	intruder := e.ca.Enroll(t, "spiffe://example.org/ns/prod/intruder", api.TokenRequest{})
	wl := clientAs(t, e.ca.URL, intruder)
	if _, err := wl.CertificatesPage(context.Background(), "", false, 0, ""); !isStatus(err, http.StatusForbidden) {
		t.Fatalf("the CA answered a workload's admin request: %v", err)
	}
	base := serve(t, dashboard.Config{CA: wl, Identity: intruder}, nil)
	_, body, _ := get(t, browser(t), base+"/certificates")
	if !strings.Contains(body, "is not an admin") || strings.Contains(body, "spiffe://example.org/ns/prod/web") {
		t.Errorf("a non-admin dashboard's certificates page:\n%s", body)
	}
}

func isStatus(err error, status int) bool {
	var ae *client.APIError
	return errors.As(err, &ae) && ae.Status == status
}

// TestLoopbackOnlyWithoutTLS: without mTLS the dashboard refuses to listen
// or serve beyond loopback, and refuses a Host that is not loopback (a
// rebound DNS name).
func TestLoopbackOnlyWithoutTLS(t *testing.T) {
	var nl *dashboard.NotLoopbackError
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", ":0", "192.0.2.1:8780", "example.org:8780"} {
		if _, err := dashboard.Listen(addr, nil); !errors.As(err, &nl) || !strings.Contains(err.Error(), "--tls-identity-dir") {
			t.Errorf("Listen(%s) without TLS: %v", addr, err)
		}
	}
	e := newEnv(t)
	admin := e.admin
	d, err := dashboard.New(dashboard.Config{CA: e.cl, Identity: admin})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := d.Serve(context.Background(), ln); !errors.As(err, &nl) {
		t.Errorf("Serve on %s without TLS: %v", ln.Addr(), err)
	}
	req, _ := http.NewRequest(http.MethodGet, e.base+"/", nil)
	req.Host = "evil.example:" + strings.Split(hostPort(e.base), ":")[1]
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// A rebound name is the attacker's origin: it may read the answer,
	// which must then say nothing of the operator or the CA.
	if resp.StatusCode != http.StatusMisdirectedRequest || strings.Contains(string(body), "example.org") {
		t.Errorf("a request for Host %s: %d\n%s", req.Host, resp.StatusCode, body)
	}
}

// TestMTLS: with TLS, only a browser presenting an admin certificate the
// CA knows gets a page.
func TestMTLS(t *testing.T) {
	e := newEnv(t)
	server := e.ca.Leaf(t, "spiffe://example.org/ops/dashboard", testca.IP("127.0.0.1"))
	base := serve(t, dashboard.Config{CA: e.cl, Identity: e.admin}, server)
	as := func(cert *tls.Certificate) *http.Client {
		cfg := &tls.Config{RootCAs: pki.CertPool(e.admin.Roots), MinVersion: tls.VersionTLS12}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	if resp, err := as(nil).Get(base + "/"); err == nil {
		resp.Body.Close()
		t.Fatalf("a browser without a client certificate got %d", resp.StatusCode)
	}
	wl := e.ca.Leaf(t, "spiffe://example.org/ns/prod/web").TLSCertificate()
	if status, body, _ := get(t, as(&wl), base+"/"); status != http.StatusForbidden || !strings.Contains(body, "is not an admin") {
		t.Errorf("a workload's certificate: %d\n%s", status, body)
	}
	// An admin certificate the CA never issued (made with its key, but
	// not recorded) is refused too.
	forged := e.ca.Leaf(t, "spiffe://example.org/admin/mallory").TLSCertificate()
	if status, body, _ := get(t, as(&forged), base+"/"); status != http.StatusForbidden || !strings.Contains(body, "could not confirm") {
		t.Errorf("an unrecorded admin certificate: %d\n%s", status, body)
	}
	adm := e.admin.TLSCertificate()
	if status, body, _ := get(t, as(&adm), base+"/"); status != http.StatusOK || !strings.Contains(body, "Live certificates") {
		t.Errorf("the admin's certificate: %d\n%s", status, body)
	}
}
