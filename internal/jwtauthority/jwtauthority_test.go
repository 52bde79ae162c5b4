package jwtauthority_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/mutual-tls/mutual/internal/jwtauthority"
	"github.com/mutual-tls/mutual/internal/store"
)

var (
	td = spiffeid.RequireTrustDomainFromString("example.org")
	id = spiffeid.RequireFromString("spiffe://example.org/web")
)

// TestRotationKeepsOldTokensVerifyingDuringOverlap: after rotation the new
// key is published at once and signs once ActivateAfter has passed, both
// keys are published, a token of the old key keeps verifying during the
// overlap and stops once the old key is dropped; a second authority on the
// same store (another replica) publishes and signs with the same keys; the
// keys are encrypted in the store.
func TestRotationKeepsOldTokensVerifyingDuringOverlap(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "mutual.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	pass := []byte("correct horse")
	now := time.Now()
	clock := func() time.Time { return now }
	o := jwtauthority.Options{RotateAfter: time.Hour, Overlap: 30 * time.Minute, ActivateAfter: 5 * time.Minute, Iterations: 1000, Now: clock}
	a, err := jwtauthority.LoadOrCreate(ctx, db, pass, o)
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
	if changed, err := a.Rotate(ctx); err != nil || changed {
		t.Fatalf("rotation before RotateAfter: %v %v", changed, err)
	}
	stored, err := db.ListJWTKeys(ctx)
	if err != nil || len(stored) != 1 {
		t.Fatalf("stored keys: %d %v", len(stored), err)
	}
	if !strings.Contains(string(stored[0].PEM), "ENCRYPTED PRIVATE KEY") {
		t.Fatal("the JWT authority key is not encrypted at rest")
	}

	now = now.Add(time.Hour) // due
	if changed, err := a.Rotate(ctx); err != nil || !changed {
		t.Fatalf("rotation after RotateAfter: %v %v", changed, err)
	}
	if ids := a.KeyIDs(); len(ids) != 2 {
		t.Fatalf("during the overlap, published keys: %v, want both", ids)
	}
	// Another replica on the same store: the same keys, no second rotation.
	b, err := jwtauthority.LoadOrCreate(ctx, db, pass, o)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(b.KeyIDs(), ",") != strings.Join(a.KeyIDs(), ",") {
		t.Fatalf("the other replica's keys %v, want %v", b.KeyIDs(), a.KeyIDs())
	}
	// Not active yet: the old key still signs.
	if kidOf(t, sign(b)) != kidOf(t, old) {
		t.Fatal("a key signs before ActivateAfter")
	}
	now = now.Add(5 * time.Minute)
	fresh := sign(b)
	for name, tok := range map[string]string{"old": old, "new": fresh} {
		if _, err := jwtsvid.ParseAndValidate(tok, a.Bundle(td), []string{"svc"}); err != nil {
			t.Fatalf("the %s key's token during the overlap: %v", name, err)
		}
	}
	if kidOf(t, old) == kidOf(t, fresh) || kidOf(t, sign(a)) != kidOf(t, fresh) {
		t.Fatal("the new key does not sign, on both replicas, once active")
	}

	now = now.Add(25 * time.Minute) // overlap over
	if changed, err := b.Rotate(ctx); err != nil || !changed {
		t.Fatalf("dropping the old key: %v %v", changed, err)
	}
	if changed, err := a.Rotate(ctx); err != nil || !changed || len(a.KeyIDs()) != 1 {
		t.Fatalf("the other replica follows the drop: %v %v %v", changed, err, a.KeyIDs())
	}
	if _, err := jwtsvid.ParseAndValidate(old, a.Bundle(td), []string{"svc"}); err == nil {
		t.Fatal("the old key's token still validates after the overlap")
	}
	if _, err := jwtauthority.LoadOrCreate(ctx, db, []byte("wrong"), o); err == nil {
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
