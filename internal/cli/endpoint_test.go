package cli_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/cli"
	"github.com/mutual-tls/mutual/internal/testlog"
)

// TestSpiffeEndpointSocketIsTheDefaultWorkloadAPI: with no --identity-dir
// and no --workload-api, the proxy and seal take the Workload API socket
// from $SPIFFE_ENDPOINT_SOCKET (here one nobody serves, which they name in
// their error); --identity-dir still wins over it.
func TestSpiffeEndpointSocketIsTheDefaultWorkloadAPI(t *testing.T) {
	sock := "unix:///nonexistent-" + t.Name() + "/agent.sock"
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", sock)
	run := func(args ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return cli.Run(ctx, args, strings.NewReader("data"), io.Discard, &testlog.Buffer{})
	}
	err := run("proxy", "inbound", "--target", "127.0.0.1:1", "--allow", "spiffe://example.org/*", "--no-revocation", "--listen", freeAddr(t))
	if err == nil || !strings.Contains(err.Error(), sock) {
		t.Errorf("proxy: %v, want it to have used %s", err, sock)
	}
	err = run("seal", "--keys", "https://127.0.0.1:1", "--to", "spiffe://example.org/ns/prod/web")
	if err == nil || !strings.Contains(err.Error(), sock) {
		t.Errorf("seal: %v, want it to have used %s", err, sock)
	}
	err = run("proxy", "inbound", "--identity-dir", t.TempDir(), "--target", "127.0.0.1:1", "--allow", "spiffe://example.org/*", "--no-revocation", "--listen", freeAddr(t))
	if err == nil || strings.Contains(err.Error(), sock) {
		t.Errorf("proxy --identity-dir: %v, want the identity directory used, not %s", err, sock)
	}
}
