// Package auditlog is an append-only, verifiable log of records kept in a
// directory: an RFC 6962 Merkle tree (golang.org/x/mod/sumdb/tlog) over
// the records, with checkpoints signed in the C2SP signed-note format by a
// translog.Signer, so that anyone holding the verifier key checks that a
// record is in the log (ProveRecord) and that the log only grew
// (ProveTree), with translog.OpenCheckpoint and tlog.CheckRecord /
// tlog.CheckTree.
//
// The key-release service records every release and refusal here.
//
// Files: "records" holds each record as a 4-byte big-endian length and its
// bytes; "hashes" holds the tree's stored hashes (tlog.StoredHashes), 32
// bytes each. A record torn by a crash is cut off at the next Open and the
// hashes are rebuilt from the records, so the records file is the truth.
package auditlog

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/mutual-tls/mutual/internal/translog"
)

// MaxRecordSize bounds one record.
const MaxRecordSize = 64 << 10

// Log is an open audit log. Its methods are safe for concurrent use.
type Log struct {
	mu      sync.Mutex
	records *os.File
	hashes  *os.File
	signer  *translog.Signer
	// offsets[i] is where record i starts in records.
	offsets []int64
	end     int64

	// syncMu orders fsyncs; synced is how many records are on disk.
	// Appenders that wait while another fsyncs share its fsync.
	syncMu sync.Mutex
	synced int64
}

// Open opens (creating it if needed) the log in dir; signer signs its
// checkpoints.
func Open(dir string, signer *translog.Signer) (*Log, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	records, err := os.OpenFile(filepath.Join(dir, "records"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	hashes, err := os.OpenFile(filepath.Join(dir, "hashes"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		records.Close()
		return nil, fmt.Errorf("audit log: %w", err)
	}
	l := &Log{records: records, hashes: hashes, signer: signer}
	if err := l.recover(); err != nil {
		l.Close()
		return nil, fmt.Errorf("audit log %s: %w", dir, err)
	}
	l.synced = int64(len(l.offsets))
	return l, nil
}

// recover indexes the records, cuts a torn last one, and rebuilds the
// hashes if they do not match the records.
func (l *Log) recover() error {
	st, err := l.records.Stat()
	if err != nil {
		return err
	}
	var off int64
	var lb [4]byte
	for off+4 <= st.Size() {
		if _, err := l.records.ReadAt(lb[:], off); err != nil {
			return err
		}
		n := int64(binary.BigEndian.Uint32(lb[:]))
		if n > MaxRecordSize || off+4+n > st.Size() {
			break
		}
		l.offsets = append(l.offsets, off)
		off += 4 + n
	}
	if off != st.Size() {
		if err := l.records.Truncate(off); err != nil {
			return err
		}
	}
	l.end = off
	want := tlog.StoredHashCount(int64(len(l.offsets))) * tlog.HashSize
	if hst, err := l.hashes.Stat(); err != nil {
		return err
	} else if hst.Size() == want && l.lastLeafMatches() {
		return nil
	}
	if err := l.hashes.Truncate(0); err != nil {
		return err
	}
	for i := range l.offsets {
		rec, err := l.read(int64(i))
		if err != nil {
			return err
		}
		if err := l.appendHashes(int64(i), rec); err != nil {
			return err
		}
	}
	return l.hashes.Sync()
}

// lastLeafMatches reports whether the stored leaf hash of the last record
// is that record's hash (the hashes are written after the record).
func (l *Log) lastLeafMatches() bool {
	n := int64(len(l.offsets))
	if n == 0 {
		return true
	}
	rec, err := l.read(n - 1)
	if err != nil {
		return false
	}
	hs, err := l.readHashes([]int64{tlog.StoredHashIndex(0, n-1)})
	return err == nil && hs[0] == tlog.RecordHash(rec)
}

// readHashes implements tlog.HashReader over the hashes file.
func (l *Log) readHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if _, err := l.hashes.ReadAt(out[i][:], x*tlog.HashSize); err != nil {
			return nil, fmt.Errorf("stored hash %d: %w", x, err)
		}
	}
	return out, nil
}

func (l *Log) appendHashes(n int64, rec []byte) error {
	hs, err := tlog.StoredHashes(n, rec, tlog.HashReaderFunc(l.readHashes))
	if err != nil {
		return err
	}
	buf := make([]byte, 0, len(hs)*tlog.HashSize)
	for _, h := range hs {
		buf = append(buf, h[:]...)
	}
	_, err = l.hashes.WriteAt(buf, tlog.StoredHashIndex(0, n)*tlog.HashSize)
	return err
}

// Append adds a record and returns its index once it is on disk.
// Concurrent appends share one fsync.
func (l *Log) Append(rec []byte) (int64, error) {
	if len(rec) > MaxRecordSize {
		return 0, fmt.Errorf("audit log: record of %d bytes, more than %d", len(rec), MaxRecordSize)
	}
	n, err := l.write(rec)
	if err != nil {
		return 0, err
	}
	return n, l.sync(n + 1)
}

func (l *Log) write(rec []byte) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.records == nil {
		return 0, errors.New("audit log: closed")
	}
	n := int64(len(l.offsets))
	buf := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(rec)), uint32(len(rec)))
	buf = append(buf, rec...)
	if _, err := l.records.WriteAt(buf, l.end); err != nil {
		return 0, fmt.Errorf("audit log: %w", err)
	}
	if err := l.appendHashes(n, rec); err != nil {
		return 0, fmt.Errorf("audit log: %w", err)
	}
	l.offsets = append(l.offsets, l.end)
	l.end += int64(len(buf))
	return n, nil
}

// sync returns once the first size records are on disk.
func (l *Log) sync(size int64) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	if l.synced >= size {
		return nil
	}
	l.mu.Lock()
	f, target := l.records, int64(len(l.offsets))
	l.mu.Unlock()
	if f == nil {
		return errors.New("audit log: closed")
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	l.synced = target
	return nil
}

// Size is the number of records.
func (l *Log) Size() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int64(len(l.offsets))
}

// Record returns record i.
func (l *Log) Record(i int64) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.read(i)
}

func (l *Log) read(i int64) ([]byte, error) {
	if i < 0 || i >= int64(len(l.offsets)) {
		return nil, fmt.Errorf("audit log: no record %d (the log holds %d)", i, len(l.offsets))
	}
	var lb [4]byte
	if _, err := l.records.ReadAt(lb[:], l.offsets[i]); err != nil {
		return nil, err
	}
	rec := make([]byte, binary.BigEndian.Uint32(lb[:]))
	if _, err := l.records.ReadAt(rec, l.offsets[i]+4); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return rec, nil
}

// Checkpoint returns a signed checkpoint of the records on disk.
func (l *Log) Checkpoint() ([]byte, error) {
	l.syncMu.Lock()
	n := l.synced
	l.syncMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	h, err := tlog.TreeHash(n, tlog.HashReaderFunc(l.readHashes))
	if err != nil {
		return nil, err
	}
	return translog.SignCheckpoint(l.signer, n, h)
}

// ProveRecord proves that record i is in the tree of size size.
func (l *Log) ProveRecord(i, size int64) (tlog.RecordProof, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return tlog.ProveRecord(size, i, tlog.HashReaderFunc(l.readHashes))
}

// ProveTree proves that the tree of size older is a prefix of the tree of
// size size.
func (l *Log) ProveTree(size, older int64) (tlog.TreeProof, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return tlog.ProveTree(size, older, tlog.HashReaderFunc(l.readHashes))
}

// Close closes the log's files.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.records == nil {
		return nil
	}
	err := errors.Join(l.hashes.Sync(), l.records.Close(), l.hashes.Close())
	l.records, l.hashes = nil, nil
	return err
}

// ReadAll calls f with each record of the log in dir, in order, reading
// only: it may run while a service appends. A torn last record ends it.
func ReadAll(dir string, f func(i int64, rec []byte) error) error {
	file, err := os.Open(filepath.Join(dir, "records"))
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	defer file.Close()
	r := bufio.NewReader(file)
	var lb [4]byte
	for i := int64(0); ; i++ {
		if _, err := io.ReadFull(r, lb[:]); err != nil {
			return nil
		}
		n := binary.BigEndian.Uint32(lb[:])
		if n > MaxRecordSize {
			return fmt.Errorf("audit log %s: record %d claims %d bytes", dir, i, n)
		}
		rec := make([]byte, n)
		if _, err := io.ReadFull(r, rec); err != nil {
			return nil
		}
		if err := f(i, rec); err != nil {
			return err
		}
	}
}
