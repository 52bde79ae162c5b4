package cli_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/testca"
)

// TestFlagErrorsNameTheFlag: a command given a bad, missing or unknown
// flag fails before doing anything, with an error that names the flag, so
// the operator knows what to fix.
func TestFlagErrorsNameTheFlag(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	idDir := agentStyleDir(t, testca.New(t), "spiffe://example.org/ns/prod/proxy", "")
	proxyArgs := []string{"proxy", "inbound", "--no-revocation", "--identity-dir", idDir, "--target", "127.0.0.1:1", "--allow", "spiffe://example.org/a", "--listen", "127.0.0.1:0"}
	for _, tt := range []struct {
		args []string
		flag string
	}{
		{[]string{"proxy", "inbound", "--bogus"}, "--bogus"},
		{[]string{"proxy", "inbound", "--idle-timeout", "soon"}, "--idle-timeout"},
		{[]string{"token", "create", "--ttl", "x"}, "--ttl"},
		{[]string{"server", "--dir"}, "--dir"},
		{[]string{"agent"}, "--dir"},
		{[]string{"proxy", "inbound", "--identity-dir", t.TempDir(), "--target", "127.0.0.1:1", "--allow", "spiffe://example.org/a"}, "--listen"},
		{append(proxyArgs, "--mode", "lax"), "--mode"},
		{append(proxyArgs, "--protocol", "udp"), "--protocol"},
		{[]string{"ca", "init", "--key-type", "dsa", "--dir", dir, "--trust-domain", "example.org"}, "--key-type"},
		{[]string{"ca", "init", "--trust-domain", "Bad Domain!", "--dir", dir}, "--trust-domain"},
	} {
		out, err := run(tt.args...)
		if err == nil {
			t.Errorf("mutual %s succeeded (%s); want an error naming %s", strings.Join(tt.args, " "), out, tt.flag)
			continue
		}
		if !strings.Contains(err.Error(), tt.flag) {
			t.Errorf("mutual %s: %q does not name %s", strings.Join(tt.args, " "), err, tt.flag)
		}
	}
}

// TestTrustDomainErrorSaysItOnce: a refused trust domain is explained once
// (the allowed characters were listed twice) and with a fix.
func TestTrustDomainErrorSaysItOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	for in, fix := range map[string]string{"Bad Domain!": "example.org", "Example.org": `use "example.org"`} {
		_, err := run("ca", "init", "--trust-domain", in, "--dir", dir)
		if err == nil {
			t.Fatalf("ca init --trust-domain %q succeeded", in)
		}
		msg := err.Error()
		if n := strings.Count(msg, "dots"); n != 1 {
			t.Errorf("--trust-domain %q: the allowed characters are said %d times, want once: %s", in, n, msg)
		}
		if !strings.Contains(msg, fix) {
			t.Errorf("--trust-domain %q: %q does not suggest %s", in, msg, fix)
		}
	}
}
