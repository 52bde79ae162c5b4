package pki_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/pki"
)

// TestRotateIntermediateRefusals: a rotation without the root key, with the
// wrong passphrase or with a root key that is not the root's changes
// nothing and says what is wrong.
func TestRotateIntermediateRefusals(t *testing.T) {
	ctx := context.Background()
	ca := initCA(t, pki.KeyECDSAP256)
	before, err := os.ReadFile(ca.path(pki.IntermediateCertFile))
	if err != nil {
		t.Fatal(err)
	}
	o := pki.RotateOptions{Dir: ca.dir, Passphrase: []byte(testPassphrase), Iterations: testIterations}

	bad := o
	bad.Passphrase = []byte("wrong")
	if _, err := pki.RotateIntermediate(ctx, bad); err == nil || !strings.Contains(err.Error(), pki.RootKeyFile) {
		t.Errorf("wrong passphrase: %v, want an error naming %s", err, pki.RootKeyFile)
	}
	other := initCA(t, pki.KeyECDSAP256)
	otherKey, _ := os.ReadFile(other.path(pki.RootKeyFile))
	rootKey, _ := os.ReadFile(ca.path(pki.RootKeyFile))
	writeFile(t, ca.path(pki.RootKeyFile), otherKey)
	if _, err := pki.RotateIntermediate(ctx, o); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("another CA's root key: %v, want a mismatch", err)
	}
	os.Remove(ca.path(pki.RootKeyFile))
	if _, err := pki.RotateIntermediate(ctx, o); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "offline") {
		t.Errorf("root key offline: %v, want fs.ErrNotExist saying to bring it back", err)
	}
	if after, _ := os.ReadFile(ca.path(pki.IntermediateCertFile)); string(after) != string(before) {
		t.Fatal("a refused rotation changed the intermediate")
	}
	if _, err := os.Stat(ca.path(pki.RetiredDir)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a refused rotation retired something: %v", err)
	}

	// With the root key back, the rotation goes through, and the CA loads
	// with the new intermediate issuing and the old one retired.
	writeFile(t, ca.path(pki.RootKeyFile), rootKey)
	rot, err := pki.RotateIntermediate(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.LoadCA(ca.dir, []byte(testPassphrase))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Issuer.Cert.Equal(rot.New) || len(c.Retired) != 1 || !c.Retired[0].Cert.Equal(rot.Old) {
		t.Fatalf("after the rotation: issuer %s, %d retired", c.Issuer.Cert.Subject, len(c.Retired))
	}
	if !rot.Old.Equal(ca.res.Intermediate) || rot.New.CheckSignatureFrom(ca.res.Root) != nil {
		t.Fatal("the new intermediate is not signed by the root, or the old one is not init's")
	}
	if rot.New.NotAfter.Sub(rot.New.NotBefore) < pki.IntermediateTTL || len(rot.New.PermittedURIDomains) != 1 {
		t.Fatalf("the new intermediate lost init's lifetime or name constraint: %s..%s %v", rot.New.NotBefore, rot.New.NotAfter, rot.New.PermittedURIDomains)
	}
}
