//go:build cgo

package keyref

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/mutual-tls/mutual/internal/pki"
)

// TestEd25519InToken: an Ed25519 key pair made in SoftHSM2 (CKM_EDDSA)
// signs inside the token; its Public is an ed25519.PublicKey; the
// signatures verify with crypto/ed25519 and as a signed note; another
// Keyring finds it again by its URI; a digest signature is refused.
func TestEd25519InToken(t *testing.T) {
	tok := newSoftToken(t)
	ctx := context.Background()
	kr := NewKeyring(Options{})
	defer kr.Close()
	key, err := kr.Generate(ctx, tok.ref(t, "log"), pki.KeyEd25519)
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := key.Public().(ed25519.PublicKey)
	if !ok {
		t.Fatalf("Public is %T, want ed25519.PublicKey", key.Public())
	}
	msg := []byte("checkpoint\n")
	sig, err := key.Sign(rand.Reader, msg, crypto.Hash(0))
	if err != nil {
		t.Fatal(err)
	}
	if !ed25519.Verify(pub, msg, sig) {
		t.Fatal("the token's Ed25519 signature does not verify")
	}
	if _, err := key.Sign(rand.Reader, msg, crypto.SHA256); err == nil {
		t.Fatal("signed a SHA-256 digest with an Ed25519 key")
	}

	other := NewKeyring(Options{})
	defer other.Close()
	again, err := other.Signer(ctx, tok.ref(t, "log"))
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(again.Public()) {
		t.Fatal("the key found again has another public key")
	}
	vkey, err := note.NewEd25519VerifierKey("example.org/mutual-log", pub)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	s := noteSigner{name: "example.org/mutual-log", hash: v.KeyHash(), key: again}
	signed, err := note.Sign(&note.Note{Text: "hello\n"}, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(signed, note.VerifierList(v)); err != nil {
		t.Fatalf("a note signed in the token does not verify: %v", err)
	}
	if _, err := kr.Generate(ctx, tok.ref(t, "log"), pki.KeyEd25519); !errors.Is(err, ErrExists) {
		t.Fatalf("making a second key labelled log: %v, want ErrExists", err)
	}
}

type noteSigner struct {
	name string
	hash uint32
	key  crypto.Signer
}

func (s noteSigner) Name() string    { return s.name }
func (s noteSigner) KeyHash() uint32 { return s.hash }
func (s noteSigner) Sign(msg []byte) ([]byte, error) {
	return s.key.Sign(rand.Reader, msg, crypto.Hash(0))
}
