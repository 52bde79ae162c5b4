package dashboard_test

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/dashboard"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testca"
)

// TestMigrationPage: the migration page gathers each proxy's report (the
// proxy package's own /migration handler): over plain HTTP, said to be
// unauthenticated; over mTLS with the operator's identity to a proxy of
// the trust domain; a proxy that does not answer, or a server of another
// trust domain at a proxy's address, is named with why (its report not
// shown), without hiding the others.
func TestMigrationPage(t *testing.T) {
	e := newEnv(t)
	plain := proxy.NewMigrationReport()
	plain.Record(&net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 5555}, "plaintext")
	plain.Record(&net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 5556}, "plaintext")
	plainSrv := httptest.NewServer(plain)
	defer plainSrv.Close()

	// A proxy serving its report over mTLS with a workload identity, which
	// requires the caller to be an admin of the trust domain.
	px := e.ca.Enroll(t, "spiffe://example.org/ns/prod/web-proxy", api.TokenRequest{})
	strict := proxy.NewMigrationReport()
	strict.Record(&net.TCPAddr{IP: net.ParseIP("192.0.2.9"), Port: 1}, "no-certificate")
	var caller string
	tlsSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0]); err == nil {
			caller = id.String()
		}
		strict.ServeHTTP(w, r)
	}))
	tlsSrv.TLS = &tls.Config{Certificates: []tls.Certificate{px.TLSCertificate()}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pki.CertPool(px.Roots)}
	tlsSrv.StartTLS()
	defer tlsSrv.Close()

	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()

	// A server of another trust domain answering at a proxy's address: its
	// report is not shown, and the page says why.
	foreign := testca.New(t, testca.WithTrustDomain("evil.example")).Leaf(t, "spiffe://evil.example/ns/prod/web-proxy")
	fake := proxy.NewMigrationReport()
	fake.Record(&net.TCPAddr{IP: net.ParseIP("203.0.113.66"), Port: 1}, "plaintext")
	fakeSrv := httptest.NewUnstartedServer(fake)
	fakeSrv.TLS = &tls.Config{Certificates: []tls.Certificate{foreign.TLSCertificate()}}
	fakeSrv.StartTLS()
	defer fakeSrv.Close()

	var proxies []dashboard.Proxy
	for _, flag := range []string{"plain=" + plainSrv.URL, "mtls=" + tlsSrv.URL + "/migration", down.URL, "impostor=" + fakeSrv.URL} {
		p, err := dashboard.ParseProxy(flag)
		if err != nil {
			t.Fatal(err)
		}
		proxies = append(proxies, p)
	}
	base := serve(t, dashboard.Config{CA: e.cl, Identity: e.admin, Proxies: proxies}, nil)
	status, body, _ := get(t, browser(t), base+"/migration")
	if status != http.StatusOK {
		t.Fatalf("GET /migration: %d\n%s", status, body)
	}
	for _, want := range []string{"10.1.2.3", "plaintext", "Read over plain HTTP: not authenticated", "192.0.2.9", "no-certificate",
		"Read over mTLS from a proxy of this trust domain", hostPort(down.URL), "unreachable"} {
		if !strings.Contains(body, want) {
			t.Errorf("the migration page lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "203.0.113.66") {
		t.Errorf("the page shows the report of a server outside the trust domain")
	}
	if i := strings.Index(body, "impostor"); i < 0 || !strings.Contains(body[i:], "unreachable") {
		t.Errorf("the page does not say why the impostor's report is missing")
	}
	if caller != e.admin.ID.String() {
		t.Errorf("the mTLS proxy saw the caller %q, want the operator %s", caller, e.admin.ID)
	}
	for _, bad := range []string{"ftp://x/migration", "web=", "web=http://"} {
		if _, err := dashboard.ParseProxy(bad); err == nil {
			t.Errorf("ParseProxy(%q) accepted it", bad)
		}
	}
}
