package caservice_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/keyref/softhsmtest"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testwait"
	"github.com/mutual-tls/mutual/internal/translog"
	"github.com/mutual-tls/mutual/internal/translog/logkey"
)

// TestLogKeyInToken: with the issuance log's Ed25519 key made in a
// SoftHSM2 token (ca init --log-key), no log key file is left, the
// verifier key is the token key's, and the service signs checkpoints in
// the token that open with that verifier key.
func TestLogKeyInToken(t *testing.T) {
	tok := softhsmtest.New(t)
	dir := initInToken(t, pki.KeyRefs{Intermediate: tok.URI("intermediate")})
	if err := caservice.AddTokenKeys(context.Background(), dir, pki.KeyRefs{Log: tok.URI("log")}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, logkey.KeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s is still there (%v): the log key lives in the token", logkey.KeyFile, err)
	}
	cfg, _, err := pki.ReadConfig(dir)
	if err != nil || cfg.Keys.Log == "" {
		t.Fatalf("ca.json names no log key (%v)", err)
	}
	pub, err := os.ReadFile(filepath.Join(dir, logkey.VerifierFile))
	if err != nil {
		t.Fatal(err)
	}
	svc, _ := run(t, caservice.Options{Dir: dir, Passphrase: []byte(testca.Passphrase), Listen: "127.0.0.1:0"})
	enroll(t, svc, "spiffe://example.org/logged")
	testwait.EventuallyNil(t, func() error {
		cp, err := svc.Store.LatestCheckpoint(context.Background())
		if err != nil {
			return err
		}
		opened, err := translog.OpenCheckpoint([]byte(cp.Note), strings.TrimSpace(string(pub)))
		if err == nil && opened.Size < 3 {
			err = errors.New("the checkpoint does not cover the enrollment yet")
		}
		return err
	}, "a checkpoint signed by the token's log key")
}
