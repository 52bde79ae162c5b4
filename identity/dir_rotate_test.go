//go:build unix

package identity_test

import (
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
)

// TestWriteDirReaderNeverSeesAMix: a reader polls a directory with Load
// while WriteDir rotates the identity in it, thousands of reads across
// many rotations; every read is one whole set, its key that of its
// certificate (issue 19, item 3).
func TestWriteDirReaderNeverSeesAMix(t *testing.T) {
	const minReads, minRotations = 3000, 150
	ca := newCA(t)
	// A few identities written in turn: each write is a real rotation
	// (a new set behind ..data, the previous one removed).
	ids := make([]*identity.Identity, 6)
	for i := range ids {
		ids[i] = issue(t, ca, "spiffe://example.org/ns/prod/web")
	}
	dir := filepath.Join(t.TempDir(), "web")
	if err := identity.WriteDir(dir, ids[0], identity.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	var (
		mu        sync.Mutex
		reads     int
		rotations int
		bad       []error
	)
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			got, err := identity.Load(dir)
			if err == nil && !pki.PublicKeysEqual(got.Chain[0].PublicKey, got.Key.Public()) {
				err = errors.New("the key does not match the certificate")
			}
			mu.Lock()
			reads++
			if err != nil && len(bad) < 5 {
				bad = append(bad, err)
			}
			mu.Unlock()
		}
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for i := 1; ; i++ {
		if err := identity.WriteDir(dir, ids[i%len(ids)], identity.WriteOptions{}); err != nil {
			close(stop)
			t.Fatal(err)
		}
		mu.Lock()
		rotations++
		enough := reads >= minReads && rotations >= minRotations
		mu.Unlock()
		if enough || time.Now().After(deadline) {
			break
		}
	}
	close(stop)
	<-readerDone
	if reads < minReads || rotations < minRotations {
		t.Fatalf("only %d reads across %d rotations before the deadline; want at least %d and %d", reads, rotations, minReads, minRotations)
	}
	for _, err := range bad {
		t.Errorf("a read during rotation: %v", err)
	}
	t.Logf("%d reads across %d rotations", reads, rotations)
}
