package identity_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
)

// TestDirSourceRunFollows drives the poll loop tick by tick: a rewrite is
// served after the next poll and closes Changed; a broken rewrite reaches
// onError on every poll while the last good identity stays served.
func TestDirSourceRunFollows(t *testing.T) {
	ca := testca.New(t)
	dir := t.TempDir()
	first := ca.Leaf(t, "spiffe://example.org/web")
	if err := first.Save(dir); err != nil {
		t.Fatal(err)
	}
	src, err := identity.NewDirSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	ticks := make(chan time.Time)
	errs := make(chan error, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.RunTicks(ctx, ticks, func(err error) { errs <- err }) }()
	tick := func() {
		ticks <- time.Time{}
		ticks <- time.Time{} // returns once the first tick's poll is over
	}

	changed := src.Changed()
	second := ca.Leaf(t, "spiffe://example.org/web")
	if err := second.Save(dir); err != nil {
		t.Fatal(err)
	}
	tick()
	select {
	case <-changed:
	default:
		t.Fatal("Changed not closed after a poll that saw a new identity")
	}
	if got := src.Identity().Leaf().SerialNumber; got.Cmp(second.Leaf().SerialNumber) != 0 {
		t.Fatalf("serving serial %s after the rewrite, want %s", pki.FormatSerial(got), pki.FormatSerial(second.Leaf().SerialNumber))
	}

	if err := os.WriteFile(filepath.Join(dir, identity.CertFile), []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	tick()
	select {
	case err := <-errs:
		if err == nil {
			t.Fatal("onError called with nil")
		}
	default:
		t.Fatal("a broken certificate file did not reach onError")
	}
	if got := src.Identity().Leaf().SerialNumber; got.Cmp(second.Leaf().SerialNumber) != 0 {
		t.Fatal("the last good identity is no longer served after a broken rewrite")
	}

	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
}
