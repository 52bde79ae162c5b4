package cli_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/cli"
	"github.com/mutual-tls/mutual/internal/testenv"
)

// TestDashboardCommand: `mutual dashboard` refuses an address beyond
// loopback without TLS, and on loopback serves the overview with the
// admin identity until its context ends.
func TestDashboardCommand(t *testing.T) {
	ca := testenv.StartCA(t, testenv.Options{})
	c, url := ca.CA, ca.URL
	out, err := run("dashboard", "--identity-dir", c.AdminDir, "--server", url, "--listen", "0.0.0.0:0")
	if err == nil || !strings.Contains(err.Error(), "not a loopback address") || !strings.Contains(err.Error(), "--tls-identity-dir") {
		t.Fatalf("listen on 0.0.0.0 without TLS: %v\n%s", err, out)
	}
	if _, err := run("dashboard", "--listen", "127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "--identity-dir") {
		t.Fatalf("no identity: %v", err)
	}
	if _, err := run("dashboard", "--identity-dir", c.AdminDir, "--server", url, "--listen", "127.0.0.1:0", "--proxy", "web=ftp://10.0.0.5/migration"); err == nil || !strings.Contains(err.Error(), "--proxy") {
		t.Fatalf("a --proxy that is not an HTTP URL: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := cli.Run(ctx, []string{"dashboard", "--identity-dir", c.AdminDir, "--server", url, "--listen", "127.0.0.1:0"}, strings.NewReader(""), io.Discard, pw)
		pw.Close()
		done <- err
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("the dashboard said nothing: %v", err)
	}
	go io.Copy(io.Discard, pr)
	_, rest, ok := strings.Cut(line, "http://")
	if !ok {
		t.Fatalf("no address in %q", line)
	}
	addr, _, _ := strings.Cut(rest, "/")
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "Live certificates") {
		t.Errorf("GET /: %d\n%s", resp.StatusCode, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("the dashboard stopped with %v", err)
	}
}
