package jwtauthority_test

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/mutual-tls/mutual/internal/jwtauthority"
)

var (
	td = spiffeid.RequireTrustDomainFromString("example.org")
	id = spiffeid.RequireFromString("spiffe://example.org/web")
)

// TestRotationKeepsOldTokensVerifyingDuringOverlap: after rotation the new
// key signs, both keys are published, a token of the old key keeps
// verifying during the overlap and stops once the old key is dropped; the
// keys survive a reload from disk and are encrypted there.
func TestRotationKeepsOldTokensVerifyingDuringOverlap(t *testing.T) {
	dir := t.TempDir()
	pass := []byte("correct horse")
	now := time.Now()
	clock := func() time.Time { return now }
	o := jwtauthority.Options{RotateAfter: time.Hour, Overlap: 30 * time.Minute, Now: clock}
	a, err := jwtauthority.LoadOrCreate(dir, pass, o)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(a *jwtauthority.Authority) string {
		t.Helper()
		tok, err := a.Sign(jwtauthority.Claims{Subject: id, Audience: []string{"svc"}, IssuedAt: time.Now(), Expiry: time.Now().Add(20 * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	old := sign(a)
	if _, err := jwtsvid.ParseAndValidate(old, a.Bundle(td), []string{"svc"}); err != nil {
		t.Fatalf("a fresh token does not validate: %v", err)
	}
	if _, err := jwtsvid.ParseAndValidate(old, a.Bundle(td), []string{"other"}); err == nil {
		t.Fatal("a token for svc validates for another audience")
	}
	// Not due yet: no rotation.
	if changed, err := a.Rotate(); err != nil || changed {
		t.Fatalf("rotation before RotateAfter: %v %v", changed, err)
	}
	// The key file is encrypted PKCS#8.
	files, _ := filepath.Glob(filepath.Join(dir, jwtauthority.Dir, "*.key"))
	if len(files) != 1 {
		t.Fatalf("key files: %v", files)
	}
	if b, _ := os.ReadFile(files[0]); !strings.Contains(string(b), "ENCRYPTED PRIVATE KEY") {
		t.Fatal("the JWT authority key is not encrypted at rest")
	}
	if _, err := exec.LookPath("openssl"); err == nil {
		if out, err := exec.Command("openssl", "pkey", "-in", files[0], "-passin", "pass:"+string(pass), "-noout").CombinedOutput(); err != nil {
			t.Fatalf("openssl pkey cannot read the key: %v\n%s", err, out)
		}
	}

	now = now.Add(time.Hour) // due
	if changed, err := a.Rotate(); err != nil || !changed {
		t.Fatalf("rotation after RotateAfter: %v %v", changed, err)
	}
	if ids := a.KeyIDs(); len(ids) != 2 {
		t.Fatalf("during the overlap, published keys: %v, want both", ids)
	}
	// Reloaded from disk, the same keys; the new one signs.
	b, err := jwtauthority.LoadOrCreate(dir, pass, o)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(b.KeyIDs(), ",") != strings.Join(a.KeyIDs(), ",") {
		t.Fatalf("reloaded keys %v, want %v", b.KeyIDs(), a.KeyIDs())
	}
	fresh := sign(b)
	for name, tok := range map[string]string{"old": old, "new": fresh} {
		if _, err := jwtsvid.ParseAndValidate(tok, b.Bundle(td), []string{"svc"}); err != nil {
			t.Fatalf("the %s key's token during the overlap: %v", name, err)
		}
	}
	if kidOf(t, old) == kidOf(t, fresh) {
		t.Fatal("the new key does not sign after rotation")
	}

	now = now.Add(30 * time.Minute) // overlap over
	if changed, err := b.Rotate(); err != nil || !changed {
		t.Fatalf("dropping the old key: %v %v", changed, err)
	}
	if _, err := jwtsvid.ParseAndValidate(old, b.Bundle(td), []string{"svc"}); err == nil {
		t.Fatal("the old key's token still validates after the overlap")
	}
	if files, _ := filepath.Glob(filepath.Join(dir, jwtauthority.Dir, "*.key")); len(files) != 1 {
		t.Fatalf("key files after the overlap: %v", files)
	}
	if _, err := jwtauthority.LoadOrCreate(dir, []byte("wrong"), o); err == nil {
		t.Fatal("the keys load with a wrong passphrase")
	}
}

func kidOf(t *testing.T, tok string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.SplitN(tok, ".", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Kid string `json:"kid"`
		Alg string `json:"alg"`
		Typ string `json:"typ"`
	}
	if err := json.Unmarshal(b, &h); err != nil || h.Kid == "" || h.Alg != "ES256" || h.Typ != "JWT" {
		t.Fatalf("JWT header %s: want kid, alg ES256, typ JWT (%v)", b, err)
	}
	return h.Kid
}
