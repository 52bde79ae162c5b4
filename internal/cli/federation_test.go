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
)

// TestFederationCommands: add, list, changes and remove a relationship
// through the admin API, as an operator types them.
func TestFederationCommands(t *testing.T) {
	c, _, _ := startCA(t)
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
