package caservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/mutual-tls/mutual/internal/atomicfile"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/translog"
)

// witness is the last checkpoint of the issuance log the CA saw in its
// store, kept in the CA directory (translog.CheckpointFile). A store whose log
// does not extend it is not this CA's store, or was reset: the CA refuses to
// start on it rather than fork its log under the same key.
type witness struct {
	Size     int64  `json:"size"`
	RootHash []byte `json:"root_hash"`
	// Note is the signed checkpoint, for a human or `mutual log verify`.
	Note string `json:"note,omitempty"`
}

func witnessPath(dir string) string { return filepath.Join(dir, translog.CheckpointFile) }

// readWitness returns the CA's last checkpoint, or nil before the first.
func readWitness(dir string) (*witness, error) {
	b, err := os.ReadFile(witnessPath(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("the CA's last log checkpoint: %w", err)
	}
	var w witness
	if err := json.Unmarshal(b, &w); err != nil || len(w.RootHash) != tlog.HashSize || w.Size < 0 {
		return nil, fmt.Errorf("the CA's last log checkpoint %s is unreadable (%v): restore it from backup with the CA directory", witnessPath(dir), err)
	}
	return &w, nil
}

// openStore opens the CA's store; once the CA has a checkpoint, a missing
// or empty SQLite file is refused and the store's log must extend it.
func openStore(ctx context.Context, dir, storeURL string) (*store.DB, error) {
	w, err := readWitness(dir)
	if err != nil {
		return nil, err
	}
	db, err := store.OpenWith(ctx, storeURL, store.Options{MustExist: w != nil})
	if err != nil {
		return nil, err
	}
	if w == nil {
		return db, nil
	}
	if err := checkWitness(ctx, db, w, witnessPath(dir)); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// checkWitness checks that db's log holds the tree w names.
func checkWitness(ctx context.Context, db *store.DB, w *witness, path string) error {
	size, err := db.LogSize(ctx)
	if err != nil {
		return err
	}
	fix := "restore the store from backup (or point --store at the one this CA uses); " +
		"to start a new CA on purpose, make a new CA directory with `mutual ca init`"
	if size < w.Size {
		return fmt.Errorf("the store's issuance log has %d entries, but this CA had already logged %d (%s): "+
			"the store is not this CA's, or it was reset; starting on it would lose certificates, tokens and revocations and fork the log: %s: %w",
			size, w.Size, path, fix, store.ErrDamaged)
	}
	if w.Size == 0 {
		return nil
	}
	h, err := tlog.TreeHash(w.Size, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		return db.ReadHashes(ctx, idx)
	}))
	if err != nil {
		return fmt.Errorf("check the store's issuance log against %s: %w", path, err)
	}
	if string(h[:]) != string(w.RootHash) {
		return fmt.Errorf("the store's issuance log is not the one this CA signed (its first %d entries differ from %s): "+
			"the store is not this CA's; starting on it would fork the log: %s: %w", w.Size, path, fix, store.ErrDamaged)
	}
	return nil
}

// saveWitness records the store's latest checkpoint beside the keys when
// it is larger than the one recorded; w is the one recorded, or nil.
func saveWitness(ctx context.Context, dir string, db *store.DB, w *witness) (*witness, error) {
	cp, err := db.LatestCheckpoint(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return w, nil
	}
	if err != nil {
		return w, err
	}
	if w != nil && cp.Size <= w.Size {
		return w, nil
	}
	// Another replica sharing the directory may have recorded more.
	if cur, err := readWitness(dir); err == nil && cur != nil && cur.Size >= cp.Size {
		return cur, nil
	}
	next := &witness{Size: cp.Size, RootHash: cp.RootHash, Note: cp.Note}
	b, err := json.MarshalIndent(next, "", "  ")
	if err != nil {
		return w, err
	}
	if err := os.MkdirAll(filepath.Dir(witnessPath(dir)), 0o700); err != nil {
		return w, err
	}
	if err := atomicfile.WriteFile(witnessPath(dir), append(b, '\n'), 0o600); err != nil {
		return w, fmt.Errorf("record the log checkpoint in %s: %w", witnessPath(dir), err)
	}
	return next, nil
}
