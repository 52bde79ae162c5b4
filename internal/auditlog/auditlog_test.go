package auditlog_test

import (
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/mutual-tls/mutual/internal/auditlog"
	"github.com/mutual-tls/mutual/internal/translog"
)

func signer(t *testing.T) *translog.Signer {
	_, priv, _ := ed25519.GenerateKey(nil)
	s, err := translog.NewSigner("example.org/mutual/keys-audit", priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestProofs: every record is provably in the signed tree, and every
// older tree is provably a prefix of the newer one.
func TestProofs(t *testing.T) {
	s := signer(t)
	dir := t.TempDir()
	l, err := auditlog.Open(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var cps []*translog.Checkpoint
	for i := range 20 {
		if n, err := l.Append(fmt.Appendf(nil, "record %d", i)); err != nil || n != int64(i) {
			t.Fatalf("Append = %d, %v; want %d", n, err, i)
		}
		signed, err := l.Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		cp, err := translog.OpenCheckpoint(signed, s.Verifier)
		if err != nil {
			t.Fatal(err)
		}
		cps = append(cps, cp)
	}
	last := cps[len(cps)-1]
	for i := range last.Size {
		rec, _ := l.Record(i)
		p, err := l.ProveRecord(i, last.Size)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckRecord(p, last.Size, last.Hash, i, tlog.RecordHash(rec)); err != nil {
			t.Errorf("record %d: %v", i, err)
		}
		if err := tlog.CheckRecord(p, last.Size, last.Hash, i, tlog.RecordHash([]byte("forged"))); err == nil {
			t.Errorf("record %d: a forged record checks", i)
		}
	}
	for _, old := range cps[:len(cps)-1] {
		p, err := l.ProveTree(last.Size, old.Size)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckTree(p, last.Size, last.Hash, old.Size, old.Hash); err != nil {
			t.Errorf("tree %d in %d: %v", old.Size, last.Size, err)
		}
	}
}

// TestReopen: a torn record is cut off, lost hashes are rebuilt, and the
// log continues with the same tree.
func TestReopen(t *testing.T) {
	s := signer(t)
	dir := t.TempDir()
	l, err := auditlog.Open(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		l.Append(fmt.Appendf(nil, "r%d", i))
	}
	before, _ := l.Checkpoint()
	l.Close()

	// A crash in the middle of a sixth record, and hashes that never made it.
	f, _ := os.OpenFile(filepath.Join(dir, "records"), os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte{0, 0, 0, 9, 'x'})
	f.Close()
	os.Truncate(filepath.Join(dir, "hashes"), 64)

	l, err = auditlog.Open(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Size() != 5 {
		t.Fatalf("size %d after reopen, want 5", l.Size())
	}
	after, _ := l.Checkpoint()
	a, _ := translog.OpenCheckpoint(before, s.Verifier)
	b, _ := translog.OpenCheckpoint(after, s.Verifier)
	if a.Hash != b.Hash {
		t.Fatal("the tree changed across a reopen")
	}
	if n, err := l.Append([]byte("r5")); err != nil || n != 5 {
		t.Fatalf("Append after reopen = %d, %v", n, err)
	}
	if rec, _ := l.Record(5); string(rec) != "r5" {
		t.Fatalf("record 5 = %q", rec)
	}
}

// TestReadAll reads what was appended, without opening the log.
func TestReadAll(t *testing.T) {
	dir := t.TempDir()
	l, err := auditlog.Open(dir, signer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 3 {
		l.Append(fmt.Appendf(nil, "r%d", i))
	}
	var got []string
	if err := auditlog.ReadAll(dir, func(i int64, rec []byte) error { got = append(got, string(rec)); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[r0 r1 r2]" {
		t.Fatalf("ReadAll = %v", got)
	}
}
