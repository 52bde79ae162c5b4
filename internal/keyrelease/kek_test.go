package keyrelease_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/keyrelease"
	"github.com/mutual-tls/mutual/internal/pki"
)

// TestFileKeys: a file KEK is encrypted at rest, 0600, refused when others
// can read it or with the wrong passphrase, and unwraps only under the
// label it wrapped with.
func TestFileKeys(t *testing.T) {
	fk := keyrelease.FileKeys{Dir: filepath.Join(t.TempDir(), "keys"), Passphrase: []byte("right"), Iterations: 1000, Bits: 2048}
	ring, err := fk.Load()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(fk.Dir, "kek-0001.pem")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %o, want 600", st.Mode().Perm())
	}
	if b, _ := os.ReadFile(path); !bytes.Contains(b, []byte("ENCRYPTED PRIVATE KEY")) {
		t.Error("the KEK is not encrypted at rest")
	}
	kek := ring.Current()
	w, err := kek.Wrap(context.Background(), make([]byte, 32), []byte("label"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kek.Unwrap(context.Background(), w, []byte("other label")); err == nil {
		t.Error("unwrapped under another label")
	}
	if k, err := kek.Unwrap(context.Background(), w, []byte("label")); err != nil || len(k) != 32 {
		t.Errorf("Unwrap = %d bytes, %v", len(k), err)
	}

	wrong := fk
	wrong.Passphrase = []byte("wrong")
	if _, err := wrong.Load(); !errors.Is(err, pki.ErrWrongPassphrase) {
		t.Errorf("wrong passphrase: %v, want ErrWrongPassphrase", err)
	}
	os.Chmod(path, 0o644)
	if _, err := fk.Load(); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a world-readable KEK: %v, want a refusal naming chmod 600", err)
	}
}

// TestNothingReleasedWithoutAudit: when the audit log cannot record, the
// service releases nothing.
func TestNothingReleasedWithoutAudit(t *testing.T) {
	e := newEnv(t)
	web := e.client(t, e.enroll(t, "spiffe://example.org/ns/prod/web"))
	sealed := sealTo(t, web, toWeb, []byte("x"))
	e.audit.Close()
	_, err := unseal(web, sealed)
	refused(t, err, 503, "nothing is released")
}
