//go:build cgo

package caservice_test

import (
	"testing"

	"github.com/ThalesGroup/crypto11"

	"github.com/mutual-tls/mutual/internal/keyref/softhsmtest"
	"github.com/mutual-tls/mutual/internal/pki"
)

// TestInitTokenKeysNonExtractable: the root and intermediate key pairs ca
// init makes in a token are token objects whose private halves are
// sensitive and not extractable, read back from the token itself.
func TestInitTokenKeysNonExtractable(t *testing.T) {
	tok := softhsmtest.New(t)
	initInToken(t, pki.KeyRefs{Root: tok.URI("root"), Intermediate: tok.URI("intermediate")})
	ctx, err := crypto11.Configure(&crypto11.Config{Path: tok.Module, TokenLabel: tok.Label, Pin: softhsmtest.PIN})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	want := map[crypto11.AttributeType]byte{crypto11.CkaToken: 1, crypto11.CkaSensitive: 1, crypto11.CkaExtractable: 0, crypto11.CkaPrivate: 1}
	for _, label := range []string{"root", "intermediate"} {
		key, err := ctx.FindKeyPair(nil, []byte(label))
		if err != nil || key == nil {
			t.Fatalf("key pair %q not in the token: %v", label, err)
		}
		var types []crypto11.AttributeType
		for a := range want {
			types = append(types, a)
		}
		attrs, err := ctx.GetAttributes(key, types)
		if err != nil {
			t.Fatal(err)
		}
		for a, v := range want {
			if got := attrs[a]; got == nil || len(got.Value) != 1 || got.Value[0] != v {
				t.Errorf("%s: private key attribute %#x = %v, want %d", label, a, got, v)
			}
		}
	}
}
