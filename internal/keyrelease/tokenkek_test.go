package keyrelease_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/keyref"
	"github.com/mutual-tls/mutual/internal/keyref/softhsmtest"
	"github.com/mutual-tls/mutual/internal/keyrelease"
	"github.com/mutual-tls/mutual/seal"
)

// TestTokenKEK: with the KEK in a SoftHSM2 token, data seals and unseals
// through the service and no KEK file is ever written; a wrong PIN is a
// clear error; a service moved from a file KEK to a token KEK still
// unwraps what the file KEK wrapped.
func TestTokenKEK(t *testing.T) {
	tok := softhsmtest.New(t)
	e := newEnv(t) // its key service wraps with a file KEK
	web := e.enroll(t, "spiffe://example.org/ns/prod/web")
	plainOld, plainNew := []byte("sealed under the file KEK"), []byte("sealed under the token KEK")
	old := sealTo(t, e.client(t, web), toWeb, plainOld)
	ctx := context.Background()
	ref := tok.URI("kek-2")

	kr := keyref.NewKeyring(keyref.Options{})
	id, err := keyrelease.TokenKeys{Keyring: kr}.Generate(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	// PKCS#11 logs in per token and process: close before trying a wrong PIN.
	if err := kr.Close(); err != nil {
		t.Fatal(err)
	}
	badPIN := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(badPIN, []byte("9999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrong := keyref.NewKeyring(keyref.Options{})
	_, err = e.keys.LoadWith(ctx, keyrelease.TokenKeys{Keyring: wrong, Refs: []string{strings.Replace(ref, tok.PINFile, badPIN, 1)}})
	wrong.Close()
	if !errors.Is(err, keyref.ErrWrongPIN) || !strings.Contains(err.Error(), badPIN) {
		t.Fatalf("a wrong PIN gave %v, want ErrWrongPIN naming %s", err, badPIN)
	}

	kr = keyref.NewKeyring(keyref.Options{})
	t.Cleanup(func() { kr.Close() })
	tk := keyrelease.TokenKeys{Keyring: kr, Refs: []string{ref}}

	// A service whose only KEK is in the token writes no KEK file.
	fresh := keyrelease.FileKeys{Dir: filepath.Join(t.TempDir(), "keys"), Passphrase: []byte("p"), Iterations: 1000}
	ring, err := fresh.LoadWith(ctx, tk)
	if err != nil {
		t.Fatal(err)
	}
	if got := ring.Current().ID(); got != id || !strings.HasPrefix(got, "rsa-oaep-sha1-gcm:") {
		t.Fatalf("current KEK %s, want the token key %s", got, id)
	}
	cl := e.clientOf(t, e.startRing(t, ring, e.watcher), web)
	sealed := sealTo(t, cl, toWeb, plainNew)
	h, err := seal.ReadHeader(bytes.NewReader(sealed))
	if err != nil || h.Slot.KeyID != id {
		t.Fatalf("sealed under %q (%v), want the token key %s", h.Slot.KeyID, err, id)
	}
	if got, err := unseal(cl, sealed); err != nil || !bytes.Equal(got, plainNew) {
		t.Fatalf("unseal through the token KEK: %q, %v", got, err)
	}
	if files, _ := filepath.Glob(filepath.Join(fresh.Dir, "kek-*")); len(files) != 0 {
		t.Errorf("KEK files written beside a token KEK: %v", files)
	}
	if _, err := unseal(cl, old); err == nil {
		t.Error("a service without the file KEK unsealed what it wrapped")
	}

	// Rotation from the file KEK to the token KEK: old files still unseal,
	// new ones wrap in the token.
	ring, err = e.keys.LoadWith(ctx, tk)
	if err != nil {
		t.Fatal(err)
	}
	cl = e.clientOf(t, e.startRing(t, ring, e.watcher), web)
	for _, c := range []struct{ sealed, plain []byte }{{old, plainOld}, {sealed, plainNew}, {sealTo(t, cl, toWeb, plainNew), plainNew}} {
		if got, err := unseal(cl, c.sealed); err != nil || !bytes.Equal(got, c.plain) {
			t.Errorf("after the move to the token: %q, %v; want %q", got, err, c.plain)
		}
	}
}

// TestTokenKEKLabel: the token construction unwraps only under the label
// it wrapped with, and refuses a damaged wrapped key (an in-memory RSA key
// stands in for the token: the construction is the same).
func TestTokenKEKLabel(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	kek, err := keyrelease.NewTokenKEK(key)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w, err := kek.Wrap(ctx, make([]byte, 32), []byte("label"))
	if err != nil {
		t.Fatal(err)
	}
	if k, err := kek.Unwrap(ctx, w, []byte("label")); err != nil || len(k) != 32 {
		t.Fatalf("Unwrap = %d bytes, %v", len(k), err)
	}
	if _, err := kek.Unwrap(ctx, w, []byte("other label")); err == nil {
		t.Error("unwrapped under another label")
	}
	for _, i := range []int{0, len(w) - 1} {
		bad := bytes.Clone(w)
		bad[i] ^= 1
		if _, err := kek.Unwrap(ctx, bad, []byte("label")); err == nil {
			t.Errorf("unwrapped with byte %d changed", i)
		}
	}
	if _, err := kek.Unwrap(ctx, w[:256], []byte("label")); err == nil {
		t.Error("unwrapped a truncated key")
	}
}
