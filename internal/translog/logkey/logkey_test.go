package logkey_test

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/mutual-tls/mutual/internal/translog/logkey"
)

func TestGenerate(t *testing.T) {
	var encoded crypto.Signer
	k, err := logkey.Generate(nil, "example.org", func(s crypto.Signer) ([]byte, error) {
		encoded = s
		return []byte("PEM"), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.PEM, []byte("PEM")) || !k.Private.Equal(encoded) {
		t.Errorf("PEM %q is not the encoding of the key made", k.PEM)
	}
	if !strings.HasPrefix(k.Verifier, logkey.Origin("example.org")+"+") {
		t.Errorf("verifier %q is not named for the log's origin", k.Verifier)
	}
	// The verifier line checks what the key signs.
	v, err := note.NewVerifier(k.Verifier)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("example.org/mutual-log\n1\nAAAA\n")
	if !v.Verify(msg, ed25519.Sign(k.Private, msg)) {
		t.Error("the verifier key does not verify the key's signature")
	}
	want, _ := logkey.VerifierKey("example.org", k.Private.Public().(ed25519.PublicKey))
	if want != k.Verifier {
		t.Errorf("VerifierKey %q, Generate %q", want, k.Verifier)
	}
}

func TestGenerateEncodeError(t *testing.T) {
	boom := errors.New("boom")
	if _, err := logkey.Generate(nil, "example.org", func(crypto.Signer) ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Errorf("encode failure: %v, want it wrapped", err)
	}
	if _, err := logkey.Generate(nil, "bad name", func(crypto.Signer) ([]byte, error) { return nil, nil }); err == nil {
		t.Error("a trust domain that makes no valid key name was accepted")
	}
}
