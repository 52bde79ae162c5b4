package server_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/pgtest"
	"github.com/mutual-tls/mutual/internal/testca"
)

// TestReadyzHidesStoreDetails: with PostgreSQL down, the anonymous /readyz
// and /healthz say "unavailable" without the database's user, host, port or
// name.
func TestReadyzHidesStoreDetails(t *testing.T) {
	pg := pgtest.Start(t)
	c := testca.New(t)
	dbURL := pg.NewDatabase(t)
	e := start(t, c, dbURL)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: rootPool(c)}}}
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	tok := e.Token(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{})
	pg.Stop(t)
	defer pg.Start(t)
	// An anonymous enrollment that reaches the store says "retry later"
	// without its address either.
	req, _ := json.Marshal(api.EnrollRequest{Token: tok, CSR: csrPEM(t, &x509.CertificateRequest{})})
	resp, err := hc.Post(e.URL+"/v1/enroll", "application/json", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, secret := range []string{u.User.Username(), u.Port(), strings.TrimPrefix(u.Path, "/"), "127.0.0.1"} {
		if strings.Contains(string(body), secret) {
			t.Errorf("/v1/enroll with the store down tells an anonymous caller %q: HTTP %d %s", secret, resp.StatusCode, body)
		}
	}
	t.Logf("/v1/enroll with the store down: HTTP %d %s", resp.StatusCode, strings.Join(strings.Fields(string(body)), " "))
	for _, path := range []string{"/readyz", "/healthz"} {
		resp, err := hc.Get(e.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("%s with the store down: %d %s", path, resp.StatusCode, body)
		}
		for _, secret := range []string{u.User.Username(), u.Port(), strings.TrimPrefix(u.Path, "/"), "127.0.0.1"} {
			if strings.Contains(string(body), secret) {
				t.Errorf("%s tells an anonymous caller %q: %s", path, secret, body)
			}
		}
	}
}
