package client_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/token"
)

func wantNotCA(t *testing.T, what string, err error) {
	t.Helper()
	var nc *client.NotCAError
	if !errors.As(err, &nc) {
		t.Fatalf("%s: %v, want the server refused as not the CA (NotCAError)", what, err)
	}
	if !strings.Contains(err.Error(), "spiffe://example.org/ns/evil") || !strings.Contains(err.Error(), "mutual/server") {
		t.Errorf("%s: error %q does not name what the server presented and the CA's identity", what, err)
	}
}

// TestWorkloadWithCAHostNamePosingAsCA: a workload granted localhost and
// 127.0.0.1 (the CA's default names) serves its own certificate, valid under
// the same root, on a port. Enrollment, renewal and the admin client must
// refuse it before sending anything: no join token, no CSR, no admin call
// reaches it.
func TestWorkloadWithCAHostNamePosingAsCA(t *testing.T) {
	ctx := context.Background()
	e := testenv.StartCA(t, testenv.Options{})
	evil, err := client.RequestIdentity(ctx, e.Token(t, "spiffe://example.org/ns/evil",
		api.TokenRequest{DNSNames: []string{"localhost"}, IPAddresses: []string{"127.0.0.1"}}), pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	im := startImpostor(t, evil.Identity)

	// Enrollment with a token that points at the impostor.
	tok := e.Token(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{})
	_, err = client.RequestIdentity(ctx, withURLs(t, tok, im.URL), pki.KeyECDSAP256, 0)
	wantNotCA(t, "enroll at the impostor", err)
	// The impostor first in the list, the CA second: the CA gets it.
	web, err := client.RequestIdentity(ctx, withURLs(t, tok, im.URL, e.URL), pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatalf("enroll with the impostor first and the CA second: %v", err)
	}

	// Renewal.
	_, err = client.RenewIdentity(ctx, web.Identity, []string{im.URL}, "", 0)
	wantNotCA(t, "renew at the impostor", err)

	// The admin client: no token is made and handed over.
	tc := e.AdminID.TLSCertificate()
	admin, err := client.New([]string{im.URL}, e.AdminID.Roots, &tc)
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: "spiffe://example.org/ns/prod/db"})
	wantNotCA(t, "admin call to the impostor", err)
	_, err = admin.ListTokens(ctx)
	wantNotCA(t, "admin list at the impostor", err)

	// An anonymous client that knows only the roots.
	anon, err := client.New([]string{im.URL}, []*x509.Certificate{e.Root}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = anon.Bundle(ctx)
	wantNotCA(t, "anonymous call to the impostor", err)

	if n := im.requests.Load(); n != 0 {
		t.Fatalf("the impostor received %d requests", n)
	}
	// The real CA is still accepted by the same clients.
	if _, err := client.RenewIdentity(ctx, web.Identity, []string{e.URL}, "", 0); err != nil {
		t.Fatalf("renew at the CA: %v", err)
	}
	if _, err := e.Admin.ListTokens(ctx); err != nil {
		t.Fatalf("admin call at the CA: %v", err)
	}
}

// TestReservedIdentitiesRefusedByTheCA: the CA's own ID and operator IDs
// cannot be put in a token, and neither they nor node IDs in a registration
// entry; workload IDs that merely contain such words can.
func TestReservedIdentitiesRefusedByTheCA(t *testing.T) {
	ctx := context.Background()
	e := testenv.StartCA(t, testenv.Options{})
	code := func(err error) string {
		var ae *client.APIError
		if !errors.As(err, &ae) {
			return "not an API error: " + err.Error()
		}
		return ae.Code
	}
	for _, id := range []string{"spiffe://example.org/mutual/server", "spiffe://example.org/admin/mallory", "spiffe://example.org/mutual/x"} {
		_, err := e.Admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: id, DNSNames: []string{"localhost"}})
		if err == nil || code(err) != "reserved_identity" {
			t.Errorf("token for %s: %v, want reserved_identity", id, err)
		}
	}
	for _, id := range []string{"spiffe://example.org/mutual/server", "spiffe://example.org/admin/mallory", "spiffe://example.org/node/n1"} {
		_, err := e.Admin.CreateEntry(ctx, api.EntryRequest{SPIFFEID: id, Nodes: []string{"spiffe://example.org/node/*"}, Selectors: []string{"unix:uid:1000"}})
		if err == nil || code(err) != "reserved_identity" {
			t.Errorf("entry for %s: %v, want reserved_identity", id, err)
		}
	}
	// Nodes enroll with tokens; workloads may have such words deeper in
	// their path.
	for _, id := range []string{"spiffe://example.org/node/n1", "spiffe://example.org/ns/admin/x", "spiffe://example.org/ns/mutual/server"} {
		if _, err := e.Admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: id}); err != nil {
			t.Errorf("token for %s: %v", id, err)
		}
	}
}

// TestEnrollWithClockBehindKeepsTheCertificate: a machine whose clock is
// three hours behind enrolls. The CA issues a certificate valid from its own
// now; the client checks it against the CA's time, keeps it, and says how
// far behind it is, instead of refusing it and burning the token.
func TestEnrollWithClockBehindKeepsTheCertificate(t *testing.T) {
	ctx := context.Background()
	e := testenv.StartCA(t, testenv.Options{})
	behind := func() time.Time { return time.Now().Add(-3 * time.Hour) }
	tok := e.Token(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{})
	enr, err := client.RequestIdentityWith(ctx, tok, client.RequestOptions{Now: behind})
	if err != nil {
		t.Fatalf("enroll with the clock 3h behind: %v", err)
	}
	if enr.ClockOffset < 3*time.Hour-time.Minute || enr.ClockOffset > 3*time.Hour+time.Minute {
		t.Errorf("ClockOffset = %s, want about 3h", enr.ClockOffset)
	}
	if !strings.Contains(enr.Warning, "your clock is 108") || !strings.Contains(enr.Warning, "seconds behind the CA's") {
		t.Errorf("warning %q does not say the clock is about 10800 seconds behind", enr.Warning)
	}
	// And three hours ahead: the certificate has "expired" by our clock.
	ahead := func() time.Time { return time.Now().Add(3 * time.Hour) }
	enr, err = client.RequestIdentityWith(ctx, e.Token(t, "spiffe://example.org/ns/prod/db", api.TokenRequest{}), client.RequestOptions{Now: ahead})
	if err != nil {
		t.Fatalf("enroll with the clock 3h ahead: %v", err)
	}
	if !strings.Contains(enr.Warning, "seconds ahead of the CA's") {
		t.Errorf("warning %q does not say the clock is ahead", enr.Warning)
	}
	// With a right clock, nothing to say.
	enr, err = client.RequestIdentityWith(ctx, e.Token(t, "spiffe://example.org/ns/prod/ok", api.TokenRequest{}), client.RequestOptions{})
	if err != nil || enr.Warning != "" {
		t.Errorf("enroll with a right clock: %v, warning %q", err, enr.Warning)
	}
}

// TestEnrollAnswerLostKeepsTheKey: the CA issues the certificate and
// consumes the token, but the answer never arrives. The key stays on disk,
// and running the same enrollment again gets the same certificate instead
// of "token used".
func TestEnrollAnswerLostKeepsTheKey(t *testing.T) {
	ctx := context.Background()
	e := testenv.StartCA(t, testenv.Options{})
	tok := e.Token(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{})
	parsed, err := token.Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	// Cut the link on the first bytes the CA sends after it recorded the
	// issuance (which it does before answering).
	used := func() bool {
		rec, err := e.Store(t).GetToken(ctx, parsed.ID)
		return err == nil && !rec.UsedAt.IsZero()
	}
	caAddr := strings.TrimPrefix(e.URL, "https://")
	r := startRelay(t, caAddr, used)
	dir := filepath.Join(t.TempDir(), "web")
	_, err = client.RequestIdentityWith(ctx, withURLs(t, tok, r.URL), client.RequestOptions{KeepKeyIn: dir})
	if err == nil {
		t.Fatal("enrollment succeeded although its answer was cut")
	}
	if !used() {
		t.Fatalf("the CA did not issue before the answer was lost: %v", err)
	}
	kept := client.PendingKeyFile(dir, parsed.ID)
	st, serr := os.Stat(kept)
	if serr != nil {
		t.Fatalf("the key was not kept after a lost answer: %v (error was %v)", serr, err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("kept key has mode %v, want 0600", st.Mode().Perm())
	}
	if !strings.Contains(err.Error(), kept) {
		t.Errorf("error %q does not say where the key is kept", err)
	}
	issued, err := e.Store(t).GetToken(ctx, parsed.ID)
	if err != nil {
		t.Fatal(err)
	}

	// Run again, straight at the CA.
	enr, err := client.RequestIdentityWith(ctx, tok, client.RequestOptions{KeepKeyIn: dir})
	if err != nil {
		t.Fatalf("re-run after the lost answer: %v", err)
	}
	if got := pki.FormatSerial(enr.Identity.Leaf().SerialNumber); got != issued.UsedSerial {
		t.Errorf("re-run got serial %s, want the one issued before, %s", got, issued.UsedSerial)
	}
	if err := enr.Identity.Save(dir); err != nil {
		t.Fatal(err)
	}
	if err := enr.Done(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(kept); !os.IsNotExist(err) {
		t.Errorf("the kept key is still there after Done: %v", err)
	}
	// Someone else with the used token gets token_used, and no key is
	// left behind for a refusal.
	other := filepath.Join(t.TempDir(), "other")
	_, err = client.RequestIdentityWith(ctx, tok, client.RequestOptions{KeepKeyIn: other})
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Code != "token_used" {
		t.Fatalf("a used token with another key: %v, want token_used", err)
	}
	if _, err := os.Stat(client.PendingKeyFile(other, parsed.ID)); !os.IsNotExist(err) {
		t.Errorf("a key was left behind after a refusal: %v", err)
	}
}

// TestRenewWithClockAheadStillRenews: by a clock three hours ahead, the
// one-hour certificate has expired; by the CA's it has not. Renewal asks the
// CA's time instead of giving up, renews, and says the clock is ahead.
func TestRenewWithClockAheadStillRenews(t *testing.T) {
	ctx := context.Background()
	e := testenv.StartCA(t, testenv.Options{})
	enr, err := client.RequestIdentity(ctx, e.Token(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{}), pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	ahead := func() time.Time { return time.Now().Add(3 * time.Hour) }
	r, err := client.RenewIdentityWith(ctx, enr.Identity, []string{e.URL}, client.RenewOptions{Now: ahead})
	if err != nil {
		t.Fatalf("renew with the clock 3h ahead: %v", err)
	}
	if !strings.Contains(r.Warning, "seconds ahead of the CA's") {
		t.Errorf("warning %q does not say the clock is ahead", r.Warning)
	}
	// A certificate that has expired by the CA's clock too is refused
	// locally, as before.
	expired := e.Leaf(t, "spiffe://example.org/ns/prod/old", testca.Expired())
	_, err = client.RenewIdentityWith(ctx, expired, []string{e.URL}, client.RenewOptions{})
	var ee *identity.ExpiredError
	if !errors.As(err, &ee) {
		t.Errorf("renew an expired certificate: %v, want ExpiredError", err)
	}
}

// TestRenewAtCAWithClockBehindSaysSo: a CA whose clock is two hours behind
// refuses a fresh certificate in the TLS handshake as "expired" (it is not
// yet valid by its clock). The client asks the CA's time and says why,
// instead of "expired certificate" or "broken pipe".
func TestRenewAtCAWithClockBehindSaysSo(t *testing.T) {
	ctx := context.Background()
	e := testenv.StartCA(t, testenv.Options{})
	enr, err := client.RequestIdentity(ctx, e.Token(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{}), pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The CA's own TLS identity and roots, served by a stack whose clock
	// is two hours behind (the CA service has no clock to inject).
	srvID, err := identity.Load(e.ServerDir)
	if err != nil {
		t.Fatal(err)
	}
	late := func() time.Time { return time.Now().Add(-2 * time.Hour) }
	pool := x509.NewCertPool()
	pool.AddCert(e.Root)
	lateURL := testnet.ServeHTTPS(t, &tls.Config{Certificates: []tls.Certificate{srvID.TLSCertificate()}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool, Time: late},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Date", late().UTC().Format(http.TimeFormat))
			w.Write([]byte(`{"status":"alive"}`))
		}))
	_, err = client.RenewIdentityWith(ctx, enr.Identity, []string{lateURL}, client.RenewOptions{})
	if err == nil {
		t.Fatal("renewal at a CA whose clock is behind succeeded")
	}
	for _, want := range []string{"your clock is 720", "seconds ahead of the CA's", "not valid until"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// The same for an admin command.
	atc := e.AdminID.TLSCertificate()
	admin, err := client.New([]string{lateURL}, e.AdminID.Roots, &atc)
	if err != nil {
		t.Fatal(err)
	}
	admin.Retries = -1
	_, err = admin.ListTokens(ctx)
	if err == nil || !strings.Contains(err.Error(), "seconds ahead of the CA's") {
		t.Errorf("admin call at a CA whose clock is behind: %v, want the clock difference named", err)
	}
}

// TestFrozenAddressCostsABoundedStall: the first address accepts TCP
// connections and never answers (a replica stopped with SIGSTOP: the
// kernel still accepts); the client gives it AttemptTimeout, then asks the
// next address, well within the caller's deadline.
func TestFrozenAddressCostsABoundedStall(t *testing.T) {
	e := testenv.StartCA(t, testenv.Options{})
	// Accept, read, answer nothing.
	frozen := testnet.Serve(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	atc := e.AdminID.TLSCertificate()
	admin, err := client.New([]string{"https://" + frozen, e.URL}, e.AdminID.Roots, &atc)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.CloseIdleConnections()
	admin.AttemptTimeout = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := admin.ListTokens(ctx); err != nil {
		t.Fatalf("with the first address frozen: %v; want the answer of the second", err)
	}
}

// TestHTTPClientAcceptsOnlyTheCA: the HTTP client handed to other packages
// (log tiles, revocation feed) verifies the CA as the API calls do: the
// impostor with the CA's host name gets no request, the CA answers, and a
// rotating certificate source is presented at each handshake.
func TestHTTPClientAcceptsOnlyTheCA(t *testing.T) {
	ctx := context.Background()
	e := testenv.StartCA(t, testenv.Options{})
	evil, err := client.RequestIdentity(ctx, e.Token(t, "spiffe://example.org/ns/evil",
		api.TokenRequest{DNSNames: []string{"localhost"}, IPAddresses: []string{"127.0.0.1"}}), pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	im := startImpostor(t, evil.Identity)

	_, err = e.Admin.HTTPClient().Get(im.URL + "/v1/log/checkpoint")
	wantNotCA(t, "HTTPClient at the impostor", err)
	if n := im.requests.Load(); n != 0 {
		t.Fatalf("the impostor received %d requests", n)
	}
	resp, err := e.Admin.HTTPClient().Get(e.URL + "/livez")
	if err != nil {
		t.Fatalf("HTTPClient at the CA: %v", err)
	}
	resp.Body.Close()

	var presented atomic.Int64
	current := e.AdminID.TLSCertificate()
	rotating, err := client.New([]string{e.URL}, e.AdminID.Roots, nil,
		client.WithServerID(pki.ServerID(e.AdminID.ID.TrustDomain())),
		client.WithCertificateSource(func() (*tls.Certificate, error) { presented.Add(1); return &current, nil }))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rotating.ListTokens(ctx); err != nil {
		t.Fatalf("admin call with the certificate from a source: %v", err)
	}
	if presented.Load() == 0 {
		t.Fatal("the source was never asked for the certificate")
	}
}
