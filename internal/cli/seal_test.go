package cli_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/cli"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/keyref/softhsmtest"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testport"
	"github.com/mutual-tls/mutual/internal/testwait"
	"github.com/mutual-tls/mutual/seal"
)

// TestSealCLI runs `mutual keys serve` beside a real CA, seals a file to
// web with `mutual seal`, unseals it as web, is refused as api, and finds
// both in `mutual keys log`.
func TestSealCLI(t *testing.T) {
	ca := testenv.StartCA(t, testenv.Options{})
	svc, admin := ca, ca.Admin
	dirs := t.TempDir()
	enroll := func(name string, req api.TokenRequest) string {
		t.Helper()
		tok, err := admin.CreateToken(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		enr, err := client.RequestIdentity(context.Background(), tok.Token, pki.KeyECDSAP256, 0)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(dirs, name)
		if err := enr.Identity.Save(dir); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	keysDir := enroll("keys", api.TokenRequest{SPIFFEID: "spiffe://example.org/mutual-keys", IPAddresses: []string{"127.0.0.1"}})
	web := enroll("web", api.TokenRequest{SPIFFEID: "spiffe://example.org/ns/prod/web"})
	apiDir := enroll("api", api.TokenRequest{SPIFFEID: "spiffe://example.org/ns/prod/api"})

	pass := filepath.Join(dirs, "pass")
	os.WriteFile(pass, []byte("kek passphrase\n"), 0o600)
	serveArgs := []string{"keys", "serve", "--identity-dir", keysDir, "--key-dir", filepath.Join(dirs, "kek"), "--passphrase-file", pass, "--ca", svc.URL}
	keys := serveKeys(t, serveArgs...)
	plainFile := filepath.Join(dirs, "secret.txt")
	os.WriteFile(plainFile, []byte("the database password\n"), 0o600)
	sealed := filepath.Join(dirs, "secret.sealed")
	// The service refuses until its revocation feed is up: wait for that.
	testwait.Eventually(t, func() bool {
		out, err := run("seal", "--identity-dir", web, "--keys", keys, "--to", "spiffe://example.org/ns/prod/web", "--not-after", "1h", plainFile, "-o", sealed)
		if err != nil && !strings.Contains(err.Error(), "revocation status unknown") {
			t.Fatalf("seal: %v\n%s", err, out)
		}
		return err == nil
	}, "seal to succeed once the key service follows the revocation feed")
	got := filepath.Join(dirs, "got.txt")
	if out, err := run("unseal", "--identity-dir", web, "--keys", keys, sealed, "-o", got); err != nil {
		t.Fatalf("unseal as web: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(got); string(b) != "the database password\n" {
		t.Fatalf("unsealed %q", b)
	}
	rewrapped := filepath.Join(dirs, "rewrapped.sealed")
	if out, err := run("seal", "--identity-dir", web, "--keys", keys, "--rewrap", sealed, "-o", rewrapped); err != nil {
		t.Fatalf("seal --rewrap: %v\n%s", err, out)
	}
	if out, err := run("unseal", "--identity-dir", web, "--keys", keys, rewrapped); err != nil || out != "the database password\n" {
		t.Fatalf("unseal of the rewrapped file: %q, %v", out, err)
	}
	refusedOut := filepath.Join(dirs, "refused.txt")
	_, err := run("unseal", "--identity-dir", apiDir, "--keys", keys, sealed, "-o", refusedOut)
	if err == nil || !strings.Contains(err.Error(), "matches none of") {
		t.Fatalf("unseal as api: %v, want a refusal", err)
	}
	if _, err := os.Stat(refusedOut); !os.IsNotExist(err) {
		t.Fatalf("a refused unseal left %s (%v)", refusedOut, err)
	}
	logOut, err := run("keys", "log", "--audit-dir", filepath.Join(dirs, "kek", "audit"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"caller":"spiffe://example.org/ns/prod/web"`, `"decision":"released"`, `"caller":"spiffe://example.org/ns/prod/api"`, `"decision":"refused"`} {
		if !strings.Contains(logOut, want) {
			t.Errorf("keys log lacks %s:\n%s", want, logOut)
		}
	}

	// Offline handoff to web's certificate key: no key service involved.
	offline := filepath.Join(dirs, "offline.sealed")
	if out, err := run("seal", "--to-cert", filepath.Join(web, "cert.pem"), plainFile, "-o", offline); err != nil || !strings.Contains(out, "lost when it rotates") {
		t.Fatalf("seal --to-cert: %v\n%s", err, out)
	}
	if out, err := run("unseal", "--offline", "--identity-dir", web, offline); err != nil || !strings.HasPrefix(out, "the database password\n") {
		t.Fatalf("unseal --offline as web: %q, %v", out, err)
	}
	if _, err := run("unseal", "--offline", "--identity-dir", apiDir, offline); err == nil || !strings.Contains(err.Error(), "another certificate's key") {
		t.Fatalf("unseal --offline as api: %v, want a refusal", err)
	}

	t.Run("token KEK", func(t *testing.T) {
		// Rotation into a SoftHSM2 token: the new key is made there, the
		// service wraps with it and still unwraps the file-KEK file.
		tok := softhsmtest.New(t)
		ref := tok.URI("kek-2")
		if out, err := run("keys", "rotate", "--kek", ref); err != nil || !strings.Contains(out, "rsa-oaep-sha1-gcm:") {
			t.Fatalf("keys rotate --kek: %v\n%s", err, out)
		}
		if _, err := run("keys", "rotate", "--kek", ref); err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Errorf("a second rotate to the same label: %v, want a refusal", err)
		}
		keys := serveKeys(t, append(serveArgs, "--kek", ref)...)
		tokenSealed := filepath.Join(dirs, "token.sealed")
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, err := run("seal", "--identity-dir", web, "--keys", keys, "--to", "spiffe://example.org/ns/prod/web", plainFile, "-o", tokenSealed)
			if err == nil {
				break
			}
			if !strings.Contains(err.Error(), "revocation status unknown") || time.Now().After(deadline) {
				t.Fatalf("seal: %v\n%s", err, out)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if b, err := os.ReadFile(tokenSealed); err != nil {
			t.Fatal(err)
		} else if h, err := seal.ReadHeader(bytes.NewReader(b)); err != nil || !strings.HasPrefix(h.Slot.KeyID, "rsa-oaep-sha1-gcm:") {
			t.Errorf("sealed under %v (%v), want the token KEK", h, err)
		}
		for _, f := range []string{sealed, tokenSealed} {
			if out, err := run("unseal", "--identity-dir", web, "--keys", keys, f); err != nil || out != "the database password\n" {
				t.Errorf("unseal %s through the token KEK service: %q, %v", filepath.Base(f), out, err)
			}
		}
		if files, _ := filepath.Glob(filepath.Join(dirs, "kek", "kek-*.pem")); len(files) != 1 {
			t.Errorf("KEK files %v, want only the file KEK made before the rotation", files)
		}
	})

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"seal", "--identity-dir", web, "--keys", keys, plainFile}, "--to: required"},
		{[]string{"seal", "--identity-dir", web, "--keys", keys, "--to", "web", plainFile}, "must start with spiffe://"},
		{[]string{"seal", "--identity-dir", web, "--keys", keys, "--to", "spiffe://example.org/web", "--not-after", "yesterday", plainFile}, "--not-after"},
		{[]string{"seal", "--identity-dir", web, "--to", "spiffe://example.org/web", plainFile}, "--keys: required"},
		{[]string{"unseal", "--keys", keys, sealed}, "--identity-dir: required"},
		{[]string{"seal", "--identity-dir", web, "--keys", keys, "--rewrap", "--to", "spiffe://example.org/web", sealed}, "--rewrap"},
		{[]string{"unseal", "--identity-dir", web, "--keys", keys, plainFile}, "not a sealed file"},
		{[]string{"keys", "serve", "--identity-dir", keysDir, "--key-dir", dirs, "--passphrase-file", pass, "--no-revocation"}, "never runs without revocation"},
	} {
		var out bytes.Buffer
		err := cli.Run(context.Background(), c.args, strings.NewReader(""), &out, &out)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("mutual %s: %v, want an error containing %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}

// serveKeys runs `mutual keys serve` with args on a free port until the test
// ends, and returns its URL once it listens.
func serveKeys(t *testing.T, args ...string) string {
	t.Helper()
	addr := testport.Addr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var serveErr error
	go func() {
		defer close(done)
		serveErr = cli.Run(ctx, append(args, "--listen", addr), strings.NewReader(""), io.Discard, io.Discard)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if serveErr != nil {
			t.Errorf("keys serve: %v", serveErr)
		}
	})
	waitListening(t, addr, done, &serveErr)
	return "https://" + addr
}

// waitListening waits until addr accepts connections, or the server ended.
func waitListening(t *testing.T, addr string, done <-chan struct{}, serveErr *error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			t.Fatalf("keys serve ended: %v", *serveErr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("keys serve is not listening on %s after 30s", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
