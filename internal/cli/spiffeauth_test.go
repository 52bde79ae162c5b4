package cli_test

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
)

// roundTrip writes msg to addr (plaintext) and reads it back.
func roundTrip(addr, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	b := make([]byte, len(msg))
	n, err := io.ReadFull(c, b)
	return string(b[:n]), err
}

// TestOutboundReachesServiceEnrolledWithoutNames is issue 25 as a new user
// meets it: a service enrolled with a plain join token (no --dns, no --ip)
// behind `mutual proxy inbound`, called through `mutual proxy outbound
// --expect <its exact ID>`, works; another service of the same CA behind
// the same address, or a --server-name its certificate lacks, is refused.
func TestOutboundReachesServiceEnrolledWithoutNames(t *testing.T) {
	ctx := context.Background()
	_, _, admin := startCA(t)
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
		r := startMutual(t, "proxy", "inbound", "--identity-dir", idDir, "--target", echo(t), "--listen", listen, "--allow", webID)
		r.listening(t)
		// Until the revocation status is known every peer is refused.
		waitLog(t, r, `"msg":"revocation feed connected"`)
		return listen
	}
	outbound := func(target string, extra ...string) (string, *running) {
		listen := freeAddr(t)
		args := append([]string{"proxy", "outbound", "--identity-dir", webDir, "--target", target, "--listen", listen}, extra...)
		r := startMutual(t, args...)
		r.listening(t)
		waitLog(t, r, `"msg":"revocation feed connected"`)
		return listen, r
	}
	db, cache := inbound(dbDir), inbound(cacheDir)

	t.Run("exact --expect, no names: works", func(t *testing.T) {
		out, r := outbound(db, "--expect", dbID)
		if got, err := roundTrip(out, "hello db"); err != nil || got != "hello db" {
			t.Fatalf("round trip = %q, %v\n%s", got, err, r.stderr)
		}
	})
	t.Run("right chain, another ID: refused", func(t *testing.T) {
		out, r := outbound(cache, "--expect", dbID)
		if got, err := roundTrip(out, "x"); err == nil {
			t.Fatalf("round trip = %q; want refused", got)
		}
		waitLog(t, r, `"reason":"not authorized"`)
	})
	t.Run("--server-name absent from the certificate: refused", func(t *testing.T) {
		out, r := outbound(db, "--expect", dbID, "--server-name", "db.internal")
		if got, err := roundTrip(out, "x"); err == nil {
			t.Fatalf("round trip = %q; want refused", got)
		}
		waitLog(t, r, `"reason":"name mismatch"`)
	})
}

// waitLog waits until the command's log holds s.
func waitLog(t *testing.T, r *running, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(r.stderr.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("the log never said %s:\n%s", s, r.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
