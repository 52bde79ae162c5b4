package server_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pgtest"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testenv"
)

// env is a running CA service on loopback (testenv, with its metrics
// listener) and its operator.
type env struct{ *testenv.CA }

// start runs a CA service for c on the store at storeURL ("" = SQLite in the CA dir).
func start(t testing.TB, c *testca.CA, storeURL string) *env {
	t.Helper()
	return &env{testenv.StartCA(t, testenv.Options{CA: c, StoreURL: storeURL, Metrics: true})}
}

func stores(t *testing.T) map[string]func(t *testing.T) string {
	var pg *pgtest.Server
	return map[string]func(t *testing.T) string{
		"sqlite": func(t *testing.T) string { return "" },
		"postgres": func(t *testing.T) string {
			if pg == nil {
				pg = pgtest.Start(t)
			}
			return pg.NewDatabase(t)
		},
	}
}

func apiCode(t *testing.T, err error) (int, string) {
	t.Helper()
	var ae *client.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("want an API error, got %v", err)
	}
	return ae.Status, ae.Code
}

// TestLifecycle walks the foundation's whole flow against both stores:
// init, serve, token, request, renew, revoke, renewal refused after
// revocation, token reuse refused, admin API refused without an admin.
func TestLifecycle(t *testing.T) {
	for name, storeURL := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			e := start(t, testca.New(t), storeURL(t))
			const web = "spiffe://example.org/ns/prod/web"
			tok := e.Token(t, web, api.TokenRequest{DNSNames: []string{"web.internal"}, IPAddresses: []string{"127.0.0.1"}, CertTTL: api.Duration(2 * time.Hour)})

			// Enroll: the root is pinned by the token's fingerprint alone.
			enr, err := client.RequestIdentity(ctx, tok, pki.KeyECDSAP256, 0)
			if err != nil {
				t.Fatal(err)
			}
			id := enr.Identity
			leaf := id.Leaf()
			if id.ID.String() != web {
				t.Fatalf("enrolled as %s, want %s", id.ID, web)
			}
			if got := leaf.NotAfter.Sub(leaf.NotBefore); got != 2*time.Hour+pki.ClockSkew {
				t.Fatalf("lifetime %s, want the token's 2h (+1m back-dating)", got)
			}
			if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "web.internal" || len(leaf.IPAddresses) != 1 {
				t.Fatalf("names: %v %v", leaf.DNSNames, leaf.IPAddresses)
			}
			verifyChain(t, id)

			// The token is single use.
			_, err = client.RequestIdentity(ctx, tok, pki.KeyECDSAP256, 0)
			if st, code := apiCode(t, err); st != http.StatusUnauthorized || code != "token_used" {
				t.Fatalf("token reuse: %d %s", st, code)
			}

			// Renew over mTLS: same identity and names, new key and serial.
			next, err := client.RenewIdentity(ctx, id, []string{e.URL}, "", 0)
			if err != nil {
				t.Fatal(err)
			}
			if next.ID != id.ID || next.Leaf().SerialNumber.Cmp(leaf.SerialNumber) == 0 || pki.PublicKeysEqual(next.Key.Public(), id.Key.Public()) {
				t.Fatal("renewal must keep the identity and change serial and key")
			}
			if next.Leaf().DNSNames[0] != "web.internal" {
				t.Fatalf("renewal lost the DNS names: %v", next.Leaf().DNSNames)
			}

			// Revoke the renewed certificate; it can no longer renew.
			rev, err := e.Admin.Revoke(ctx, api.RevokeRequest{Serial: pki.FormatSerial(next.Leaf().SerialNumber), Reason: "keyCompromise"})
			if err != nil || len(rev.Revoked) != 1 {
				t.Fatalf("revoke: %+v %v", rev, err)
			}
			_, err = client.RenewIdentity(ctx, next, []string{e.URL}, "", 0)
			if st, code := apiCode(t, err); st != http.StatusForbidden || code != "cert_revoked" {
				t.Fatalf("renew after revoke: %d %s", st, code)
			}
			// Revoking again is harmless.
			rev, err = e.Admin.Revoke(ctx, api.RevokeRequest{Serial: pki.FormatSerial(next.Leaf().SerialNumber)})
			if err != nil || !rev.Revoked[0].AlreadyRevoked {
				t.Fatalf("revoke twice: %+v %v", rev, err)
			}
			// The first certificate still renews, until its identity is revoked.
			if _, err := client.RenewIdentity(ctx, id, []string{e.URL}, "", 0); err != nil {
				t.Fatalf("the older certificate should still renew: %v", err)
			}
			rev, err = e.Admin.Revoke(ctx, api.RevokeRequest{SPIFFEID: web})
			if err != nil || len(rev.Revoked) != 3 {
				t.Fatalf("revoke identity: %+v %v", rev, err)
			}
			_, err = client.RenewIdentity(ctx, id, []string{e.URL}, "", 0)
			if st, _ := apiCode(t, err); st != http.StatusForbidden {
				t.Fatalf("renew after identity revoked: %d", st)
			}
			// Unknown serial.
			_, err = e.Admin.Revoke(ctx, api.RevokeRequest{Serial: "0123abcd"})
			if st, _ := apiCode(t, err); st != http.StatusNotFound || !strings.Contains(err.Error(), "not issued by this CA") {
				t.Fatalf("unknown serial: %v", err)
			}

			// The list shows what happened.
			list, err := e.Admin.ListCertificates(ctx, web, false)
			if err != nil {
				t.Fatal(err)
			}
			if len(list.Certificates) != 3 {
				t.Fatalf("%d certificates of %s listed, want 3", len(list.Certificates), web)
			}
			for _, c := range list.Certificates {
				if c.RevokedAt == nil {
					t.Errorf("%s not shown revoked", c.Serial)
				}
			}
			toks, err := e.Admin.ListTokens(ctx)
			if err != nil || len(toks.Tokens) != 1 || toks.Tokens[0].UsedAt == nil {
				t.Fatalf("tokens: %+v %v", toks, err)
			}
		})
	}
}

func verifyChain(t *testing.T, id *identity.Identity) {
	t.Helper()
	if _, err := pki.VerifyChain(id.Chain, id.Roots, time.Time{}, x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatalf("issued chain does not verify with crypto/x509: %v", err)
	}
}

// TestAdminRequired: admin endpoints refuse callers without an admin certificate.
func TestAdminRequired(t *testing.T) {
	ctx := context.Background()
	c := testca.New(t)
	e := start(t, c, "")
	tok := e.Token(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{})
	enr, err := client.RequestIdentity(ctx, tok, pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	anon, _ := client.New([]string{e.URL}, []*x509.Certificate{c.Root}, nil)
	wtc := enr.Identity.TLSCertificate()
	workload, _ := client.New([]string{e.URL}, []*x509.Certificate{c.Root}, &wtc)
	other := testca.New(t)
	otc := other.Leaf(t, "spiffe://example.org/admin/intruder").TLSCertificate()
	intruder, _ := client.New([]string{e.URL}, []*x509.Certificate{c.Root}, &otc)

	for _, tc := range []struct {
		name string
		cl   *client.Client
		want int
	}{
		{"no certificate", anon, http.StatusUnauthorized},
		{"workload certificate", workload, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cl.CreateToken(ctx, api.TokenRequest{SPIFFEID: "spiffe://example.org/x"})
			if st, code := apiCode(t, err); st != tc.want || code != "admin_required" {
				t.Fatalf("create token: %d %s", st, code)
			}
			_, err = tc.cl.ListCertificates(ctx, "", false)
			if st, _ := apiCode(t, err); st != tc.want {
				t.Fatalf("list: %d", st)
			}
			_, err = tc.cl.Revoke(ctx, api.RevokeRequest{SPIFFEID: "spiffe://example.org/ns/prod/web"})
			if st, _ := apiCode(t, err); st != tc.want {
				t.Fatalf("revoke: %d", st)
			}
		})
	}
	t.Run("admin certificate from another CA", func(t *testing.T) {
		// Refused at the TLS layer: the chain does not verify.
		_, err := intruder.ListTokens(ctx)
		if err == nil {
			t.Fatal("a certificate from another CA was accepted")
		}
	})
	t.Run("revoked admin", func(t *testing.T) {
		adminID, _ := identity.Load(c.AdminDir)
		if _, err := e.Admin.Revoke(ctx, api.RevokeRequest{Serial: pki.FormatSerial(adminID.Leaf().SerialNumber)}); err != nil {
			t.Fatal(err)
		}
		_, err := e.Admin.ListTokens(ctx)
		if st, code := apiCode(t, err); st != http.StatusForbidden || code != "cert_revoked" {
			t.Fatalf("revoked admin: %d %s", st, code)
		}
	})
}

// TestRefusals: bad input gets a 4xx with a JSON body naming the problem.
func TestRefusals(t *testing.T) {
	ctx := context.Background()
	c := testca.New(t)
	e := start(t, c, "")
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: rootPool(c)}}}
	post := func(path, body string) (int, api.Error) {
		resp, err := hc.Post(e.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ae api.Error
		b, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(b, &ae); err != nil {
			t.Fatalf("%s: body is not a JSON error: %q", path, b)
		}
		return resp.StatusCode, ae
	}
	goodCSR := csrPEM(t, nil)
	tok := func() string { return e.Token(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{}) }
	enrollBody := func(token, csr string, extra string) string {
		b, _ := json.Marshal(map[string]string{"token": token, "csr": csr})
		s := string(b)
		if extra != "" {
			s = s[:len(s)-1] + "," + extra + "}"
		}
		return s
	}
	foreign := csrPEM(t, &x509.CertificateRequest{URIs: mustURIs(t, "spiffe://evil.org/web")})

	for _, tc := range []struct {
		name, body string
		status     int
		code       string
	}{
		{"not JSON", "{", 400, "bad_request"},
		{"unknown field", `{"token":"x","csr":"y","admin":true}`, 400, "bad_request"},
		{"missing csr", `{"token":"x"}`, 400, "bad_request"},
		{"malformed token", enrollBody("mutual1.garbage", goodCSR, ""), 401, "token_malformed"},
		{"unknown token", enrollBody(forgeToken(t, e), goodCSR, ""), 401, "token_unknown"},
		{"corrupt CSR", enrollBody(tok(), "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", ""), 400, "bad_csr"},
		{"foreign trust domain in CSR", enrollBody(tok(), foreign, ""), 400, "foreign_trust_domain"},
		{"lifetime over policy", enrollBody(tok(), goodCSR, `"ttl":"48h"`), 400, "lifetime"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, ae := post("/v1/enroll", tc.body)
			if st != tc.status || ae.Code != tc.code || ae.Error == "" {
				t.Fatalf("got %d %+v, want %d %s", st, ae, tc.status, tc.code)
			}
		})
	}
	t.Run("refused request leaves the token usable", func(t *testing.T) {
		tk := tok()
		if st, _ := post("/v1/enroll", enrollBody(tk, foreign, "")); st != 400 {
			t.Fatalf("status %d", st)
		}
		if _, err := client.RequestIdentity(ctx, tk, pki.KeyECDSAP256, 0); err != nil {
			t.Fatalf("token spoiled by a refused request: %v", err)
		}
	})
	t.Run("expired token", func(t *testing.T) {
		tk := tok()
		e.Authority(t).Now = func() time.Time { return time.Now().Add(time.Hour) }
		defer func() { e.Authority(t).Now = nil }()
		st, ae := post("/v1/enroll", enrollBody(tk, goodCSR, ""))
		if st != 401 || ae.Code != "token_expired" {
			t.Fatalf("got %d %+v", st, ae)
		}
	})
	t.Run("renew without a certificate", func(t *testing.T) {
		st, ae := post("/v1/renew", `{"csr":"x"}`)
		if st != 401 || ae.Code != "client_certificate_required" {
			t.Fatalf("got %d %+v", st, ae)
		}
	})
	t.Run("unknown endpoint", func(t *testing.T) {
		st, _ := post("/v2/enroll", "{}")
		if st != 404 {
			t.Fatalf("got %d", st)
		}
	})
}

// TestMTLSInterop: a Go tls.Dial with issued certificates completes mTLS
// against a plain crypto/tls server that trusts the bundle.
func TestMTLSInterop(t *testing.T) {
	ctx := context.Background()
	c := testca.New(t)
	e := start(t, c, "")
	srvID, err := client.RequestIdentity(ctx, e.Token(t, "spiffe://example.org/ns/prod/db", api.TokenRequest{IPAddresses: []string{"127.0.0.1"}}), pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	cliID, err := client.RequestIdentity(ctx, e.Token(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{}), pki.KeyEd25519, 0)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{srvID.Identity.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    srvID.Identity.RootPool(),
		MinVersion:   tls.VersionTLS13,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer := make(chan string, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			peer <- err.Error()
			return
		}
		defer conn.Close()
		tc := conn.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			peer <- err.Error()
			return
		}
		peer <- tc.ConnectionState().PeerCertificates[0].URIs[0].String()
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
		Certificates: []tls.Certificate{cliID.Identity.TLSCertificate()},
		RootCAs:      cliID.Identity.RootPool(),
		ServerName:   "127.0.0.1",
		MinVersion:   tls.VersionTLS13,
	})
	if err != nil {
		t.Fatal(err)
	}
	conn.Handshake()
	conn.Close()
	if got := <-peer; got != "spiffe://example.org/ns/prod/web" {
		t.Fatalf("server saw peer %q", got)
	}
}

// TestStoreOutage: with PostgreSQL stopped the API answers 503 (JSON), the
// server keeps running, and it recovers when the database returns.
func TestStoreOutage(t *testing.T) {
	ctx := context.Background()
	pg := pgtest.Start(t)
	c := testca.New(t)
	e := start(t, c, pg.NewDatabase(t))
	tok := e.Token(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{})
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: rootPool(c)}}}

	pg.Stop(t)
	_, err := client.RequestIdentity(ctx, tok, pki.KeyECDSAP256, 0)
	if st, code := apiCode(t, err); st != http.StatusServiceUnavailable || code != "store_unavailable" {
		t.Fatalf("enroll with the store down: %d %s", st, code)
	}
	resp, err := hc.Get(e.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("healthz with the store down: %d", resp.StatusCode)
	}
	// The bundle needs no store.
	if _, err := e.Admin.Bundle(ctx); err != nil {
		t.Fatalf("bundle with the store down: %v", err)
	}

	pg.Start(t)
	// The failed attempt did not consume the token.
	if _, err := client.RequestIdentity(ctx, tok, pki.KeyECDSAP256, 0); err != nil {
		t.Fatalf("after the store came back: %v", err)
	}
	resp, err = hc.Get(e.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz after recovery: %d", resp.StatusCode)
	}
}

// TestMetrics: Prometheus text on its own listener.
func TestMetrics(t *testing.T) {
	e := start(t, testca.New(t), "")
	e.Token(t, "spiffe://example.org/x", api.TokenRequest{})
	resp, err := http.Get(e.MetricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`mutual_ca_tokens_created_total 1`, `mutual_ca_http_requests_total{code="200",route="tokens_create"} 1`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// The API listener does not serve metrics.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: rootPool(e.CA.CA)}}}
	r2, err := hc.Get(e.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != http.StatusNotFound {
		t.Fatalf("API /metrics: %d", r2.StatusCode)
	}
}

func rootPool(c *testca.CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Root)
	return p
}

func csrPEM(t *testing.T, tmpl *x509.CertificateRequest) string {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{}
	}
	k, _ := pki.GenerateKey(pki.KeyECDSAP256, nil)
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pki.EncodeCSR(der))
}

// forgeToken makes a well-formed token for this CA that it never issued.
func forgeToken(t *testing.T, e *env) string {
	tok := e.Token(t, "spiffe://example.org/forge", api.TokenRequest{})
	// Flip the secret: same id and fingerprint, wrong secret.
	parsed, err := tokenParse(tok)
	if err != nil {
		t.Fatal(err)
	}
	parsed.Secret[0] ^= 0xff
	return parsed.String()
}

// TestIssueAdmin: `ca admin` issues an operator identity while the server
// runs; it authenticates as admin and can be revoked.
func TestIssueAdmin(t *testing.T) {
	ctx := context.Background()
	c := testca.New(t)
	e := start(t, c, "")
	alice, err := caservice.IssueAdmin(ctx, c.Dir, []byte(testca.Passphrase), "", "alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if alice.ID.String() != "spiffe://example.org/admin/alice" {
		t.Fatalf("issued %s", alice.ID)
	}
	tc := alice.TLSCertificate()
	cl, _ := client.New([]string{e.URL}, alice.Roots, &tc)
	defer cl.CloseIdleConnections()
	if _, err := cl.ListTokens(ctx); err != nil {
		t.Fatalf("alice is not accepted as admin: %v", err)
	}
	if _, err := e.Admin.Revoke(ctx, api.RevokeRequest{SPIFFEID: alice.ID.String()}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.ListTokens(ctx); err == nil {
		t.Fatal("a revoked admin is still accepted")
	}
	if _, err := caservice.IssueAdmin(ctx, c.Dir, []byte(testca.Passphrase), "", "bad/name", time.Hour); err == nil {
		t.Fatal("a name with a slash was accepted")
	}
}

// TestEnrollReplay: a retry of an enrollment whose answer was lost (same
// token, CSR for the same key) gets the same certificate; a request with
// another key is refused as a reused token.
func TestEnrollReplay(t *testing.T) {
	ctx := context.Background()
	c := testca.New(t)
	e := start(t, c, "")
	tok := e.Token(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{})
	anon, _ := client.New([]string{e.URL}, []*x509.Certificate{c.Root}, nil)
	csr := csrPEM(t, nil)
	first, err := anon.Enroll(ctx, api.EnrollRequest{Token: tok, CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	again, err := anon.Enroll(ctx, api.EnrollRequest{Token: tok, CSR: csr})
	if err != nil {
		t.Fatalf("replayed enrollment: %v", err)
	}
	if again.Serial != first.Serial || again.ChainPEM != first.ChainPEM || again.LogIndex != first.LogIndex {
		t.Fatalf("replay returned another certificate: %s vs %s", again.Serial, first.Serial)
	}
	_, err = anon.Enroll(ctx, api.EnrollRequest{Token: tok, CSR: csrPEM(t, nil)})
	if st, code := apiCode(t, err); st != http.StatusUnauthorized || code != "token_used" {
		t.Fatalf("another key with a used token: %d %s", st, code)
	}
	list, err := e.Admin.ListCertificates(ctx, "spiffe://example.org/ns/prod/web", false)
	if err != nil || len(list.Certificates) != 1 {
		t.Fatalf("%d certificates stored, want 1 (%v)", len(list.Certificates), err)
	}
}
