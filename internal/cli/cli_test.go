package cli_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/cli"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/token"
)

func run(args ...string) (string, error) {
	var out, errb bytes.Buffer
	err := cli.Run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return out.String() + errb.String(), err
}

// TestCLIRefusesWorkloadPosingAsCA: a workload that the CA granted
// localhost and 127.0.0.1 (the CA's own default names, what `mutual dev`
// hands out) listens on a port with its certificate. `cert request`, `cert
// renew` and the admin commands pointed at it refuse it and send nothing:
// the join token is not stolen and enrolls at the real CA afterwards.
func TestCLIRefusesWorkloadPosingAsCA(t *testing.T) {
	ctx := context.Background()
	c := testenv.StartCA(t, testenv.Options{})
	mk := func(id string, req api.TokenRequest) string { return c.Token(t, id, req) }
	evil, err := client.RequestIdentity(ctx, mk("spiffe://example.org/ns/evil", api.TokenRequest{DNSNames: []string{"localhost"}, IPAddresses: []string{"127.0.0.1"}}), pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The impostor presents the workload's chain and the root, as the CA does.
	tc := evil.Identity.TLSCertificate()
	tc.Certificate = append(tc.Certificate, c.Root.Raw)
	var hits atomic.Int64
	fakeURL := testnet.ServeHTTPS(t, &tls.Config{Certificates: []tls.Certificate{tc}, ClientAuth: tls.RequestClientCert},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			io.Copy(io.Discard, r.Body)
			w.Write([]byte(`{}`))
		}))

	dir := t.TempDir()
	tok := mk("spiffe://example.org/ns/prod/web", api.TokenRequest{})
	parsed, err := token.Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	parsed.CAURLs = []string{fakeURL}
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte(parsed.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	webDir := filepath.Join(dir, "web")
	for _, args := range [][]string{
		{"cert", "request", "--token-file", tokFile, "--out", webDir},
		{"token", "create", "--identity-dir", c.AdminDir, "--server", fakeURL, "--identity", "spiffe://example.org/ns/prod/db"},
		{"token", "list", "--identity-dir", c.AdminDir, "--server", fakeURL},
		{"cert", "list", "--identity-dir", c.AdminDir, "--server", fakeURL},
	} {
		out, err := run(args...)
		if notCA := (*client.NotCAError)(nil); !errors.As(err, &notCA) {
			t.Errorf("mutual %s: %v (%s), want refused as not the CA", strings.Join(args, " "), err, out)
		}
	}
	// The real token still enrolls at the CA; then renewal at the impostor.
	if out, err := run("cert", "request", "--token", tok, "--out", webDir); err != nil {
		t.Fatalf("cert request at the CA: %v\n%s", err, out)
	}
	if _, err := os.Stat(webDir); err != nil {
		t.Fatal(err)
	}
	out, err := run("cert", "renew", "--dir", webDir, "--server", fakeURL)
	if notCA := (*client.NotCAError)(nil); !errors.As(err, &notCA) {
		t.Errorf("cert renew at the impostor: %v (%s), want refused as not the CA", err, out)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the impostor received %d requests", n)
	}
	if out, err := run("cert", "renew", "--dir", webDir, "--server", c.URL); err != nil {
		t.Fatalf("cert renew at the CA: %v\n%s", err, out)
	}
}
