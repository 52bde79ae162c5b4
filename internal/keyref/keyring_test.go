package keyref

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/pki"
)

// writeKey writes a fresh ECDSA P-256 key as PEM, encrypted when pass is set.
func writeKey(t *testing.T, pass []byte) (string, crypto.Signer) {
	t.Helper()
	k, err := pki.GenerateKey(pki.KeyECDSAP256, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := pki.MarshalPrivateKey(k, pass, 1000)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, k
}

func TestFileKey(t *testing.T) {
	ctx := context.Background()
	path, k := writeKey(t, []byte("correct horse"))
	r, err := Parse("file:" + path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewKeyring(Options{Passphrase: []byte("correct horse")}).Signer(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if !pki.PublicKeysEqual(s.Public(), k.Public()) {
		t.Fatal("the file key opened as another key")
	}
	digest := sha256.Sum256([]byte("mutual"))
	sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatal("the file key's signature does not verify")
	}

	if opened, err := NewKeyring(Options{Passphrase: []byte("correct horse")}).Open(ctx, path); err != nil || !pki.PublicKeysEqual(opened.Public(), k.Public()) {
		t.Errorf("Open(%s) = %v", path, err)
	}
	var ae *AttrError
	if _, err := NewKeyring(Options{}).Open(ctx, "pkcs11:token=t;object=k?module-path=/m.so&pin-value=1"); !errors.As(err, &ae) || ae.Attr != "pin-value" {
		t.Errorf("Open with pin-value gave %v", err)
	}
	if _, err := NewKeyring(Options{Passphrase: []byte("wrong")}).Signer(ctx, r); !errors.Is(err, pki.ErrWrongPassphrase) || !strings.Contains(err.Error(), path) {
		t.Errorf("a wrong passphrase gave %v, want pki.ErrWrongPassphrase naming %s", err, path)
	}
	missing, _ := Parse(filepath.Join(t.TempDir(), "absent.pem"))
	if _, err := NewKeyring(Options{}).Signer(ctx, missing); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "pkcs11: URI") {
		t.Errorf("a missing key file gave %v", err)
	}
	if _, err := NewKeyring(Options{}).Generate(ctx, r, pki.KeyECDSAP256); !errors.Is(err, ErrNotInToken) {
		t.Errorf("Generate with a file reference gave %v, want ErrNotInToken", err)
	}
}

func TestKeyringRefusals(t *testing.T) {
	ctx := context.Background()
	kr := NewKeyring(Options{})
	if _, err := kr.Signer(ctx, Ref{}); err == nil {
		t.Error("the zero Ref opened")
	}
	r, err := Parse("pkcs11:token=t;id=%01?module-path=/m.so&pin-source=env:P")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kr.Generate(ctx, r, ""); err == nil || !strings.Contains(err.Error(), "object=LABEL") {
		t.Errorf("Generate without object= gave %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	path, _ := writeKey(t, nil)
	fr, _ := Parse(path)
	if _, err := kr.Signer(cancelled, fr); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled context gave %v", err)
	}
	if err := kr.Close(); err != nil {
		t.Fatal(err)
	}
	tr, _ := Parse("pkcs11:token=t;object=k?module-path=/m.so&pin-source=env:P")
	if _, err := kr.Signer(ctx, tr); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("a closed keyring gave %v", err)
	}
}

func ExampleKeyring_Signer() {
	dir, err := os.MkdirTemp("", "keyref-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	key, _ := pki.GenerateKey(pki.KeyECDSAP256, nil)
	pemKey, _ := pki.MarshalPrivateKey(key, []byte("passphrase"), 1000)
	path := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(path, pemKey, 0o600); err != nil {
		fmt.Println(err)
		return
	}

	// The same call opens a pkcs11: URI; the caller does not care where
	// the key lives.
	ref, err := Parse("file:" + path)
	if err != nil {
		fmt.Println(err)
		return
	}
	kr := NewKeyring(Options{Passphrase: []byte("passphrase")})
	defer kr.Close()
	signer, err := kr.Signer(context.Background(), ref)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(pki.KeyDescription(signer.Public()), "in a token:", ref.InToken())
	// Output: ECDSA P-256 in a token: false
}
