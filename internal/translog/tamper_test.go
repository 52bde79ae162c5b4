package translog_test

// Tamper tests: someone with write access to the CA's store changes a stored
// entry or hash, rewrites history and re-signs it with the log's own key,
// replays an old checkpoint, or serves a checkpoint signed by another key.
// Each is detected by mutual's client, by the independent auditor, and by
// the real `mutual log verify`, which names the check that failed.

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/translog"
	"github.com/mutual-tls/mutual/internal/translog/logkey"
)

// verifyArgs are `mutual log verify`'s arguments for e with state file st.
func (e *caEnv) verifyArgs(st string, extra ...string) []string {
	return append([]string{"log", "verify", "--server", e.HTTPURL, "--key-file", filepath.Join(e.Dir, logkey.VerifierFile), "--state", st}, extra...)
}

func writeCert(t *testing.T, cert *x509.Certificate) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(p, pki.EncodeCertificates(cert), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// readEntries reads every stored entry straight from the store's file.
func (e *caEnv) readEntries(t testing.TB) [][]byte {
	t.Helper()
	rows, err := e.sql(t).Query("SELECT idx, data FROM log_entries ORDER BY idx")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var idx int64
		var data []byte
		if err := rows.Scan(&idx, &data); err != nil {
			t.Fatal(err)
		}
		if idx != int64(len(out)) {
			t.Fatalf("entry %d missing", len(out))
		}
		out = append(out, data)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// rewriteHistory replaces entry victim with data and recomputes every stored
// hash, so that the store holds a different, internally consistent tree of
// the same size; it then signs a checkpoint for it with the log's key in
// place of the honest one. It returns the forged tree's hash.
func (e *caEnv) rewriteHistory(t testing.TB, victim int64, data []byte) tlog.Hash {
	t.Helper()
	entries := e.readEntries(t)
	entries[victim] = data
	hashes := map[int64]tlog.Hash{}
	hr := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, id := range idx {
			h, ok := hashes[id]
			if !ok {
				return nil, fmt.Errorf("hash %d not computed", id)
			}
			out[i] = h
		}
		return out, nil
	})
	for i, d := range entries {
		hs, err := tlog.StoredHashes(int64(i), d, hr)
		if err != nil {
			t.Fatal(err)
		}
		base := tlog.StoredHashIndex(0, int64(i))
		for j, h := range hs {
			hashes[base+int64(j)] = h
		}
	}
	n := int64(len(entries))
	th, err := tlog.TreeHash(n, hr)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := translog.SignCheckpoint(e.signer(t), n, th)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := e.sql(t).Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec("UPDATE log_entries SET data = ? WHERE idx = ?", data, victim); err != nil {
		t.Fatal(err)
	}
	for id, h := range hashes {
		if _, err := tx.Exec("UPDATE log_hashes SET hash = ? WHERE id = ?", h[:], id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tx.Exec("DELETE FROM log_checkpoints WHERE size >= ?", n); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("INSERT INTO log_checkpoints (size, root_hash, note, created_at_us) VALUES (?, ?, ?, ?)", n, th[:], string(signed), time.Now().UnixMicro()); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return th
}

// rollBack makes the store serve the checkpoint of size keep again, as if
// the log had been restored from an old backup.
func (e *caEnv) rollBack(t testing.TB, keep int64) {
	t.Helper()
	if e.exec(t, "DELETE FROM log_checkpoints WHERE size > ?", keep) == 0 {
		t.Fatal("no newer checkpoint to remove")
	}
}

// serveNote replaces the newest stored checkpoint's note with signed.
func (e *caEnv) serveNote(t testing.TB, signed []byte) {
	t.Helper()
	if e.exec(t, "UPDATE log_checkpoints SET note = ? WHERE size = (SELECT MAX(size) FROM log_checkpoints)", string(signed)) != 1 {
		t.Fatal("no checkpoint to replace")
	}
}

// entryIndex is the index the store gives cert.
func (e *caEnv) entryIndex(t testing.TB, cert *x509.Certificate) int64 {
	t.Helper()
	idx, err := e.Store(t).LogIndexOf(context.Background(), pki.FormatSerial(cert.SerialNumber))
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// TestTamperEntry changes a stored entry (who asked for a certificate):
// the tree no longer matches it, and every verifier says so.
func TestTamperEntry(t *testing.T) {
	ctx := context.Background()
	e := startCA(t, "")
	certs := e.issueMany(t, 20)
	target := certs[7]
	cp := e.settle(t)
	cl := e.logClient()
	if _, _, err := cl.ProveCertificate(ctx, cp, target); err != nil {
		t.Fatalf("before tampering: %v", err)
	}
	certFile := writeCert(t, target)
	st := filepath.Join(t.TempDir(), "state.json")
	mustMutual(t, e.verifyArgs(st, "--cert", certFile)...)

	idx := e.entryIndex(t, target)
	entry, err := translog.ParseEntry(e.readEntries(t)[idx])
	if err != nil {
		t.Fatal(err)
	}
	entry.RequestedBy = "token:someone-else"
	forged := entry.Marshal()
	if e.exec(t, "UPDATE log_entries SET data = ? WHERE idx = ?", forged, idx) != 1 {
		t.Fatal("entry not changed")
	}

	_, _, err = cl.ProveCertificate(ctx, cp, target)
	if !errors.Is(err, translog.ErrTampered) {
		t.Errorf("ProveCertificate of a tampered entry: %v, want ErrTampered", err)
	}
	if _, err := cl.Entries(ctx, cp, 0, cp.Size); !errors.Is(err, translog.ErrTampered) || !strings.Contains(err.Error(), fmt.Sprintf("entry %d ", idx)) {
		t.Errorf("Entries over a tampered entry: %v", err)
	}

	a := newAuditor(t, e.HTTPURL, e.verifierKey)
	acp, err := a.checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.entries(acp); err == nil {
		t.Error("the independent auditor accepted the tampered entry bundle")
	}
	if err := a.proveInclusion(acp, idx, forged); err == nil {
		t.Error("the independent auditor proved the tampered entry included")
	}

	mustFailOneLine(t, []string{fmt.Sprintf("entry %d", idx), "tampered"}, e.verifyArgs(st, "--cert", certFile)...)
}

// TestTamperTile changes a stored hash without re-signing: the tile served
// no longer matches the signed tree.
func TestTamperTile(t *testing.T) {
	ctx := context.Background()
	e := startCA(t, "")
	certs := e.issueMany(t, 20)
	cp := e.settle(t)
	target := certs[3]
	idx := e.entryIndex(t, target)
	var h tlog.Hash
	for i := range h {
		h[i] = 0xAB
	}
	if e.exec(t, "UPDATE log_hashes SET hash = ? WHERE id = ?", h[:], tlog.StoredHashIndex(0, idx)) != 1 {
		t.Fatal("hash not changed")
	}
	_, _, err := e.logClient().ProveCertificate(ctx, cp, target)
	if err == nil {
		t.Error("ProveCertificate succeeded over a tampered tile")
	}
	a := newAuditor(t, e.HTTPURL, e.verifierKey)
	acp, err := a.checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.entries(acp); err == nil {
		t.Error("the independent auditor accepted a tampered tile")
	}
	mustFailOneLine(t, []string{"tile"}, e.verifyArgs(filepath.Join(t.TempDir(), "st.json"), "--cert", writeCert(t, target))...)
}

// TestTamperRewriteHistory: the attacker rewrites an old entry, recomputes
// the whole tree and signs it with the log's own key. Signatures verify;
// only consistency with what a verifier saw before catches it.
func TestTamperRewriteHistory(t *testing.T) {
	ctx := context.Background()
	e := startCA(t, "")
	certs := e.issueMany(t, 30)
	honest := e.settle(t)
	cl := e.logClient()
	st := filepath.Join(t.TempDir(), "state.json")
	mustMutual(t, e.verifyArgs(st)...)
	a := newAuditor(t, e.HTTPURL, e.verifierKey)
	aHonest, err := a.checkpoint()
	if err != nil {
		t.Fatal(err)
	}

	idx := e.entryIndex(t, certs[5])
	entry, err := translog.ParseEntry(e.readEntries(t)[idx])
	if err != nil {
		t.Fatal(err)
	}
	entry.RequestedBy = "token:innocent"
	forgedHash := e.rewriteHistory(t, idx, entry.Marshal())

	// Same size, another tree: a fork.
	forged, err := cl.Checkpoint(ctx)
	if err != nil {
		t.Fatalf("the forged checkpoint is signed with the log's key, it must verify: %v", err)
	}
	if forged.Size != honest.Size || forged.Hash != forgedHash {
		t.Fatalf("served %d %v, want the forged %d %v", forged.Size, forged.Hash, honest.Size, forgedHash)
	}
	if err := cl.CheckConsistency(ctx, honest, forged); !errors.Is(err, translog.ErrFork) {
		t.Errorf("CheckConsistency(honest, forged of the same size) = %v, want ErrFork", err)
	}
	mustFailOneLine(t, []string{"forked"}, e.verifyArgs(st)...)

	// The CA goes on issuing on top of the forged tree and signs larger
	// checkpoints itself: still not an extension of what was seen.
	e.issueMany(t, 10)
	grown := e.settle(t)
	if grown.Size <= honest.Size {
		t.Fatalf("the log did not grow: %d", grown.Size)
	}
	if err := cl.CheckConsistency(ctx, forged, grown); err != nil {
		t.Fatalf("the grown forged tree extends the forged one: %v", err)
	}
	if err := cl.CheckConsistency(ctx, honest, grown); !errors.Is(err, translog.ErrFork) {
		t.Errorf("CheckConsistency(honest, grown forged tree) = %v, want ErrFork", err)
	}
	aGrown, err := a.checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.proveConsistency(aHonest, aGrown); err == nil {
		t.Error("the independent auditor found the rewritten log consistent with the honest checkpoint")
	}
	mustFailOneLine(t, []string{"forked", fmt.Sprintf("%d entries", honest.Size)}, e.verifyArgs(st)...)
}

// TestTamperRollback: an old checkpoint is served again (a log restored
// from a backup, or a split view): the log shrank.
func TestTamperRollback(t *testing.T) {
	ctx := context.Background()
	e := startCA(t, "")
	e.issueMany(t, 10)
	older := e.settle(t)
	e.issueMany(t, 10)
	newer := e.settle(t)
	st := filepath.Join(t.TempDir(), "state.json")
	mustMutual(t, e.verifyArgs(st)...)
	saved, err := os.ReadFile(st)
	if err != nil {
		t.Fatal(err)
	}

	e.rollBack(t, older.Size)
	cl := e.logClient()
	served, err := cl.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if served.Size != older.Size {
		t.Fatalf("served %d entries, want the replayed %d", served.Size, older.Size)
	}
	if err := cl.CheckConsistency(ctx, newer, served); !errors.Is(err, translog.ErrRollback) {
		t.Errorf("CheckConsistency(newer, replayed older) = %v, want ErrRollback", err)
	}
	line := mustFailOneLine(t, []string{"rollback", fmt.Sprint(older.Size), fmt.Sprint(newer.Size)}, e.verifyArgs(st)...)
	t.Log(line)
	// The verifier did not learn the rollback: it fails again, loudly.
	if now, _ := os.ReadFile(st); string(now) != string(saved) {
		t.Errorf("the state file changed after a failed verification:\n%s\nwas:\n%s", now, saved)
	}
	mustFailOneLine(t, []string{"rollback"}, e.verifyArgs(st)...)
}

// TestTamperForeignOrTruncatedCheckpoint: a checkpoint signed by another key
// (under the same log name), a truncated one, a re-signed body with the
// wrong origin or a malformed size.
func TestTamperForeignOrTruncatedCheckpoint(t *testing.T) {
	e := startCA(t, "")
	e.issueMany(t, 5)
	cp := e.settle(t)
	real := e.signer(t)

	_, otherKey, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	impostor, err := translog.NewSigner(logkey.Origin("example.org"), otherKey)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := translog.SignCheckpoint(impostor, cp.Size+100, cp.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := translog.OpenCheckpoint(foreign, e.verifierKey); !errors.Is(err, translog.ErrBadSignature) {
		t.Errorf("a checkpoint signed by another key: %v, want ErrBadSignature", err)
	}
	// Every truncation of a genuine checkpoint is refused.
	for n := 0; n < len(cp.Note); n++ {
		_, err := translog.OpenCheckpoint(cp.Note[:n], e.verifierKey)
		if !errors.Is(err, translog.ErrMalformed) && !errors.Is(err, translog.ErrBadSignature) {
			t.Fatalf("checkpoint truncated to %d bytes: %v, want ErrMalformed or ErrBadSignature", n, err)
		}
	}
	// The genuine signature over a changed body.
	changed := []byte(strings.Replace(string(cp.Note), fmt.Sprintf("\n%d\n", cp.Size), fmt.Sprintf("\n%d\n", cp.Size+1), 1))
	if _, err := translog.OpenCheckpoint(changed, e.verifierKey); !errors.Is(err, translog.ErrBadSignature) {
		t.Errorf("a changed body under the genuine signature: %v, want ErrBadSignature", err)
	}
	// Bodies the log's key signed but that are not checkpoints of this log.
	for body, want := range map[string]error{
		"example.org/mutual-log\n":                           translog.ErrMalformed,
		"example.org/mutual-log\n-1\nAAAA\n":                 translog.ErrMalformed,
		"example.org/mutual-log\n007\n" + b64hash(cp) + "\n": translog.ErrMalformed,
		"example.org/mutual-log\n7\nnot base64\n":            translog.ErrMalformed,
		"example.org/mutual-log\n7\nAAAA\n":                  translog.ErrMalformed,
		"other.org/mutual-log\n7\n" + b64hash(cp) + "\n":     translog.ErrWrongOrigin,
	} {
		signed, err := signNote(real, body)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := translog.OpenCheckpoint(signed, e.verifierKey); !errors.Is(err, want) {
			t.Errorf("signed body %q: %v, want %v", body, err, want)
		}
	}

	// The real binary, against a CA that serves them.
	e.serveNote(t, foreign)
	mustFailOneLine(t, []string{"checkpoint", "signature"}, e.verifyArgs(filepath.Join(t.TempDir(), "st.json"))...)
	e.serveNote(t, cp.Note[:len(cp.Note)/2])
	mustFailOneLine(t, []string{"checkpoint"}, e.verifyArgs(filepath.Join(t.TempDir(), "st.json"))...)
	// Restored, it verifies.
	e.serveNote(t, cp.Note)
	mustMutual(t, e.verifyArgs(filepath.Join(t.TempDir(), "st.json"))...)
}

// TestServerRefusesImpossibleTiles: a tile that cannot exist in the tree (a
// level above any the tree has) is "beyond the tree", not data.
func TestServerRefusesImpossibleTiles(t *testing.T) {
	e := startCA(t, "")
	e.issueMany(t, 300)
	e.settle(t)
	a := newAuditor(t, e.HTTPURL, e.verifierKey)
	for _, p := range []string{"tile/2/000.p/1", "tile/7/000.p/1", "tile/8/000.p/1", "tile/9/000.p/3", "tile/30/000.p/1", "tile/7/128.p/1"} {
		_, err := a.get(p)
		var se *httpStatusError
		if !errors.As(err, &se) || se.status != 404 {
			t.Errorf("GET /log/%s: %v, want HTTP 404 (beyond the tree)", p, err)
		}
	}
}

func b64hash(cp *translog.Checkpoint) string { return base64.StdEncoding.EncodeToString(cp.Hash[:]) }

func signNote(s note.Signer, body string) ([]byte, error) {
	return note.Sign(&note.Note{Text: body}, s)
}
