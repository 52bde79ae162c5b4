//go:build cgo

package keyref

import (
	"context"
	"crypto"
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/keyref/softhsmtest"
	"github.com/mutual-tls/mutual/internal/pki"
)

// TestTokenRemovedAndBack: a key whose token is unplugged fails to sign
// with an error naming the key, and signs again once it is back, through
// the same Keyring (sessions are not left in a broken state).
func TestTokenRemovedAndBack(t *testing.T) {
	tok := softhsmtest.NewRemovable(t, softhsmtest.New(t))
	ctx := context.Background()
	kr := newKeyring(t, Options{})
	ref, err := Parse(tok.URI("intermediate"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := kr.Generate(ctx, ref, pki.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("to be signed"))
	sign := func() error {
		_, err := key.Sign(nil, digest[:], crypto.SHA256)
		return err
	}
	if err := sign(); err != nil {
		t.Fatal(err)
	}
	tok.Remove(t)
	for range 3 {
		err := sign()
		if err == nil || !strings.Contains(err.Error(), `object "intermediate"`) || !strings.Contains(err.Error(), "CKR_DEVICE_REMOVED") {
			t.Fatalf("signing with the token removed: %v, want an error naming the key and the removal", err)
		}
	}
	tok.Insert(t)
	for range 3 {
		if err := sign(); err != nil {
			t.Fatalf("signing once the token is back: %v", err)
		}
	}
}
