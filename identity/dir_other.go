//go:build !unix

package identity

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mutual-tls/mutual/internal/atomicfile"
)

// errNoOwner: writing for another user needs the descriptor-relative
// calls of a Unix system.
var errNoOwner = errors.New("writing an identity directory for another user (WriteOptions.Owner) needs a Unix system")

func prepareDir(dir string, owner *Owner) error {
	if owner != nil {
		return errNoOwner
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("identity directory: %w", err)
	}
	return nil
}

// writeSet replaces each file atomically; without symbolic links a reader
// may see a new file beside an old one, which Load reports as a key that
// does not belong to the certificate (DirSource then keeps the last good
// identity and tries again).
func writeSet(dir string, files []dirFile, owner *Owner) error {
	if err := prepareDir(dir, owner); err != nil {
		return err
	}
	// The federated bundles are replaced as a directory, so that one
	// removed from the set goes.
	if err := os.RemoveAll(filepath.Join(dir, FederatedDir)); err != nil {
		return err
	}
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, f.name)), 0o755); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}
