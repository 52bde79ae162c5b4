package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testenv"
)

// TestFederationCommands: add, list, changes and remove a relationship
// through the admin API, as an operator types them.
func TestFederationCommands(t *testing.T) {
	c := testenv.StartCA(t, testenv.Options{}).CA
	partner := testca.New(t, testca.WithTrustDomain("partner.example"))
	bundle := filepath.Join(t.TempDir(), "partner.pem")
	if err := os.WriteFile(bundle, pki.EncodeCertificates(partner.Root), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := []string{"--identity-dir", c.AdminDir}
	out, err := run(append([]string{"federation", "add", "--trust-domain", "partner.example", "--endpoint-url", "https://127.0.0.1:1/bundle",
		"--endpoint-id", "spiffe://partner.example/spire/server", "--bundle", bundle}, admin...)...)
	if err != nil || !strings.Contains(out, "Federated with partner.example") {
		t.Fatalf("federation add: %v\n%s", err, out)
	}
	out, err = run(append([]string{"federation", "list", "--json"}, admin...)...)
	var list api.FederationList
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list.Federations) != 1 || len(list.Federations[0].Keys) != 1 ||
		list.Federations[0].Profile != "https_spiffe" {
		t.Fatalf("federation list: %v\n%s", err, out)
	}
	out, err = run(append([]string{"federation", "changes", "--trust-domain", "partner.example"}, admin...)...)
	if err != nil || !strings.Contains(out, "federation added") || !strings.Contains(out, "spiffe://example.org/admin/") {
		t.Fatalf("federation changes: %v\n%s", err, out)
	}
	if out, err = run(append([]string{"federation", "add", "--trust-domain", "example.org", "--endpoint-url", "https://x/b", "--profile", "https_web"}, admin...)...); err == nil {
		t.Errorf("federation add of the CA's own trust domain succeeded:\n%s", out)
	}
	if out, err = run(append([]string{"federation", "remove", "partner.example"}, admin...)...); err != nil {
		t.Fatalf("federation remove: %v\n%s", err, out)
	}
	if out, err = run(append([]string{"federation", "remove", "partner.example"}, admin...)...); err == nil {
		t.Errorf("second remove succeeded:\n%s", out)
	}
}

// TestPartnerCommands: create a partnership, make a token under it, show,
// list and end it; after the end no token is made.
func TestPartnerCommands(t *testing.T) {
	c := testenv.StartCA(t, testenv.Options{}).CA
	admin := []string{"--identity-dir", c.AdminDir}
	mut := func(args ...string) (string, error) { return run(append(args, admin...)...) }
	if out, err := mut("partner", "create", "acme", "--role", "reader", "--for", "24h"); err == nil {
		t.Fatalf("partner create without a service it may reach succeeded:\n%s", out)
	}
	if out, err := mut("partner", "create", "acme", "--for", "24h", "--allow-service", "spiffe://partner.example/**"); err == nil {
		t.Fatalf("partner create reaching another trust domain's services succeeded:\n%s", out)
	}
	if out, err := mut("partner", "create", "acme", "--role", "reader", "--for", "24h", "--allow-service", "spiffe://example.org/ns/prod/orders",
		"--allow-request", "GET,HEAD /v1/orders/"); err != nil || !strings.Contains(out, "spiffe://example.org/partner/acme/") || !strings.Contains(out, "GET,HEAD /v1/orders/") {
		t.Fatalf("partner create: %v\n%s", err, out)
	}
	if out, err := mut("partner", "scope", "acme", "--allow-service", "spiffe://example.org/ns/prod/orders", "--allow-request", "GET /v1/orders/"); err != nil || !strings.Contains(out, "now reaches spiffe://example.org/ns/prod/orders: GET /v1/orders/") {
		t.Fatalf("partner scope: %v\n%s", err, out)
	}
	if out, err := mut("partner", "scope", "acme", "--allow-service", "spiffe://example.org/x", "--allow-request", "get /x"); err == nil {
		t.Fatalf("partner scope with a lower-case method succeeded:\n%s", out)
	}
	out, err := mut("partner", "token", "acme", "--path", "billing", "--json")
	var tok api.TokenResponse
	if err != nil || json.Unmarshal([]byte(out), &tok) != nil || tok.SPIFFEID != "spiffe://example.org/partner/acme/billing" {
		t.Fatalf("partner token: %v\n%s", err, out)
	}
	if out, err := mut("partner", "show", "acme"); err != nil || !strings.Contains(out, "active") || !strings.Contains(out, "Reaches: spiffe://example.org/ns/prod/orders: GET /v1/orders/") ||
		!strings.Contains(out, "Last seen: never") {
		t.Fatalf("partner show: %v\n%s", err, out)
	}
	if out, err := mut("partner", "end", "acme"); err != nil || !strings.Contains(out, "Ended partnership acme") {
		t.Fatalf("partner end: %v\n%s", err, out)
	}
	if out, err := mut("partner", "list"); err != nil || !strings.Contains(out, "ended") {
		t.Fatalf("partner list: %v\n%s", err, out)
	}
	if out, err := mut("partner", "token", "acme", "--path", "x"); err == nil {
		t.Errorf("a token was made under an ended partnership:\n%s", out)
	}
	if out, err := mut("partner", "create", "late"); err == nil {
		t.Errorf("partner create without an end succeeded:\n%s", out)
	}
}
