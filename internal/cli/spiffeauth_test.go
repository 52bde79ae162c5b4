package cli_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testnet"
)

// TestOutboundReachesServiceEnrolledWithoutNames is issue 25 as a new user
// meets it: a service enrolled with a plain join token (no --dns, no --ip)
// behind `mutual proxy inbound`, called through `mutual proxy outbound
// --expect <its exact ID>`, works; another service of the same CA behind
// the same address, or a --server-name its certificate lacks, is refused.
func TestOutboundReachesServiceEnrolledWithoutNames(t *testing.T) {
	ctx := context.Background()
	admin := testenv.StartCA(t, testenv.Options{}).Admin
	dir := t.TempDir()
	enroll := func(id string) string {
		t.Helper()
		r, err := admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: id})
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, id[strings.LastIndex(id, "/")+1:])
		if o, err := run("cert", "request", "--token", r.Token, "--out", out); err != nil {
			t.Fatalf("cert request %s: %v\n%s", id, err, o)
		}
		idn, err := identity.Load(out)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(idn.Leaf().DNSNames) + len(idn.Leaf().IPAddresses); n != 0 {
			t.Fatalf("test setup: %s was issued %d names", id, n)
		}
		return out
	}
	const (
		dbID    = "spiffe://example.org/ns/prod/db"
		cacheID = "spiffe://example.org/ns/prod/cache"
		webID   = "spiffe://example.org/ns/prod/web"
	)
	dbDir, cacheDir, webDir := enroll(dbID), enroll(cacheID), enroll(webID)

	inbound := func(idDir string) string {
		listen := freeAddr(t)
		r := startMutual(t, "proxy", "inbound", "--identity-dir", idDir, "--target", testnet.Echo(t), "--listen", listen, "--allow", webID)
		r.listening(t)
		// Until the revocation status is known every peer is refused.
		r.waitLog(t, `"msg":"revocation feed connected"`)
		return listen
	}
	outbound := func(target string, extra ...string) (string, *running) {
		listen := freeAddr(t)
		args := append([]string{"proxy", "outbound", "--identity-dir", webDir, "--target", target, "--listen", listen}, extra...)
		r := startMutual(t, args...)
		r.listening(t)
		r.waitLog(t, `"msg":"revocation feed connected"`)
		return listen, r
	}
	db, cache := inbound(dbDir), inbound(cacheDir)

	t.Run("exact --expect, no names: works", func(t *testing.T) {
		out, r := outbound(db, "--expect", dbID)
		if got, err := testnet.RoundTrip(out, nil, "hello db"); err != nil || got != "hello db" {
			t.Fatalf("round trip = %q, %v\n%s", got, err, r.stderr)
		}
	})
	t.Run("right chain, another ID: refused", func(t *testing.T) {
		out, r := outbound(cache, "--expect", dbID)
		if got, err := testnet.RoundTrip(out, nil, "x"); err == nil {
			t.Fatalf("round trip = %q; want refused", got)
		}
		r.waitLog(t, `"reason":"not authorized"`)
	})
	t.Run("--server-name absent from the certificate: refused", func(t *testing.T) {
		out, r := outbound(db, "--expect", dbID, "--server-name", "db.internal")
		if got, err := testnet.RoundTrip(out, nil, "x"); err == nil {
			t.Fatalf("round trip = %q; want refused", got)
		}
		r.waitLog(t, `"reason":"name mismatch"`)
	})
}
