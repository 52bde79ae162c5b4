package translog_test

// Unit tests of the pieces: the log key's files, entries, state files,
// rules, and the HTTP handler's answers when its store fails.

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/translog"
	"github.com/mutual-tls/mutual/internal/translog/logkey"
)

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	pass := []byte("a passphrase")
	s, err := translog.LoadOrCreateKey(dir, "example.org", pass, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if s.Name() != "example.org/mutual-log" || !strings.HasPrefix(s.Verifier, "example.org/mutual-log+") {
		t.Errorf("signer %q, verifier %q", s.Name(), s.Verifier)
	}
	pub, err := os.ReadFile(filepath.Join(dir, logkey.VerifierFile))
	if err != nil || strings.TrimSpace(string(pub)) != s.Verifier {
		t.Fatalf("verifier file %q, %v", pub, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, logkey.KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v %v", fi, err)
	}
	// A checkpoint it signs verifies with the published key.
	signed, err := translog.SignCheckpoint(s, 3, tlog.RecordHash([]byte("x")))
	if err != nil {
		t.Fatal(err)
	}
	cp, err := translog.OpenCheckpoint(signed, string(pub))
	if err != nil || cp.Size != 3 {
		t.Fatalf("OpenCheckpoint: %+v %v", cp, err)
	}

	// Loaded again: the same key.
	again, err := translog.LoadOrCreateKey(dir, "example.org", pass, 1000)
	if err != nil || again.Verifier != s.Verifier || again.KeyHash() != s.KeyHash() {
		t.Fatalf("reloaded: %v %v", again, err)
	}
	if _, err := translog.LoadOrCreateKey(dir, "example.org", []byte("wrong"), 1000); !errors.Is(err, pki.ErrWrongPassphrase) {
		t.Errorf("a wrong passphrase: %v, want ErrWrongPassphrase", err)
	}
	// A verifier file that does not match the key is refused.
	_, other, _ := ed25519.GenerateKey(nil)
	otherSigner, _ := translog.NewSigner("example.org/mutual-log", other)
	os.WriteFile(filepath.Join(dir, logkey.VerifierFile), []byte(otherSigner.Verifier+"\n"), 0o644)
	if _, err := translog.LoadOrCreateKey(dir, "example.org", pass, 1000); !errors.Is(err, translog.ErrVerifierMismatch) {
		t.Errorf("mismatched verifier file: %v", err)
	}
	// A key that is not Ed25519 is refused.
	k, _ := pki.GenerateKey(pki.KeyECDSAP256, nil)
	pemKey, _ := pki.MarshalPrivateKey(k, pass, 1000)
	dir2 := t.TempDir()
	os.MkdirAll(filepath.Dir(filepath.Join(dir2, logkey.KeyFile)), 0o700)
	os.WriteFile(filepath.Join(dir2, logkey.KeyFile), pemKey, 0o600)
	if _, err := translog.LoadOrCreateKey(dir2, "example.org", pass, 1000); !errors.Is(err, translog.ErrNotEd25519) {
		t.Errorf("an ECDSA log key: %v", err)
	}
	if _, err := translog.NewSigner("bad name with spaces", other); err == nil {
		t.Error("a signer name with spaces was accepted")
	}
}

func TestOpenCheckpointBadKey(t *testing.T) {
	if _, err := translog.OpenCheckpoint([]byte("x\n"), "not a key"); err == nil || !strings.Contains(err.Error(), "verifier key") {
		t.Errorf("bad verifier key: %v", err)
	}
	// A note with no signature at all.
	_, priv, _ := ed25519.GenerateKey(nil)
	s, _ := translog.NewSigner("example.org/mutual-log", priv)
	if _, err := translog.OpenCheckpoint([]byte("example.org/mutual-log\n1\nAAAA\n\n"), s.Verifier); !errors.Is(err, translog.ErrBadSignature) {
		t.Errorf("unsigned note: %v", err)
	}
	// Signed by a key of another name only.
	_, priv2, _ := ed25519.GenerateKey(nil)
	s2, _ := translog.NewSigner("elsewhere.org/mutual-log", priv2)
	signed, _ := note.Sign(&note.Note{Text: "example.org/mutual-log\n1\nAAAA\n"}, s2)
	if _, err := translog.OpenCheckpoint(signed, s.Verifier); !errors.Is(err, translog.ErrBadSignature) || !strings.Contains(err.Error(), "elsewhere.org") {
		t.Errorf("signed by another log's key: %v", err)
	}
}

func TestEntry(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b := translog.Entry{Certificate: []byte{1, 2, 3}, RequestedBy: "token:t1", Node: "spiffe://example.org/node/n", IssuedAt: at}.Marshal()
	e, err := translog.ParseEntry(b)
	if err != nil || e.Version != 1 || e.RequestedBy != "token:t1" || e.Node != "spiffe://example.org/node/n" || !e.IssuedAt.Equal(at) {
		t.Fatalf("round trip: %+v %v", e, err)
	}
	if _, err := e.Cert(); err == nil {
		t.Error("three bytes parsed as a certificate")
	}
	for in, want := range map[string]string{
		`not json`:              "log entry",
		`{"v":2,"cert":"AQ=="}`: "unknown version 2",
		`{"v":1}`:               "no certificate",
	} {
		if _, err := translog.ParseEntry([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseEntry(%s): %v, want %q", in, err, want)
		}
	}
}

func TestState(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "state.json")
	st, err := translog.LoadState(p)
	if err != nil || st.Checkpoint != "" || st.Next != 0 {
		t.Fatalf("missing state file: %+v %v", st, err)
	}
	st = &translog.State{VerifierKey: "k", Checkpoint: "c", Next: 7, Issuers: []string{"ab"}}
	if err := st.Save(p); err != nil {
		t.Fatal(err)
	}
	got, err := translog.LoadState(p)
	if err != nil || got.Next != 7 || got.Checkpoint != "c" || len(got.Issuers) != 1 {
		t.Fatalf("reloaded %+v %v", got, err)
	}
	os.WriteFile(p, []byte("{"), 0o600)
	if _, err := translog.LoadState(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("corrupt state file: %v", err)
	}
	if _, err := translog.LoadState(t.TempDir()); err == nil {
		t.Error("a directory loaded as a state file")
	}
}

func TestParseRules(t *testing.T) {
	r, err := translog.ParseRules(nil)
	if err != nil || r.MaxLifetime != 24*time.Hour || r.Burst.Window != time.Minute || r.Burst.PerIdentity != 30 || r.Burst.PerNode != 500 {
		t.Fatalf("defaults: %+v %v", r, err)
	}
	r, err = translog.ParseRules([]byte("dns_suffixes: [.Internal]\nissuers: [\"AB:CD:EF:01:23:45:67:89\"]\n"))
	if err != nil || r.DNSSuffixes[0] != ".internal" || r.Issuers[0] != "abcdef0123456789" {
		t.Fatalf("normalised: %+v %v", r, err)
	}
	for in, want := range map[string]string{
		"identities: [\"example.org/x\"]": "spiffe://",
		"issuers: [\"zz\"]":               "Subject Key Identifier",
		"issuers: [\"abcd\"]":             "Subject Key Identifier",
		"unknown_field: 1":                "unknown_field",
		"max_lifetime: forever":           "monitor rules",
	} {
		if _, err := translog.ParseRules([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRules(%q): %v, want an error naming %q", in, err, want)
		}
	}
}

// failingStore is a log store that is down, or empty.
type failingStore struct {
	err error
}

func (f failingStore) LogSize(context.Context) (int64, error) { return 0, f.err }
func (f failingStore) ReadHashes(context.Context, []int64) ([]tlog.Hash, error) {
	return nil, f.err
}
func (f failingStore) LogEntries(context.Context, int64, int64) ([][]byte, error) { return nil, f.err }
func (f failingStore) SaveCheckpoint(context.Context, store.Checkpoint) error     { return f.err }
func (f failingStore) LatestCheckpoint(context.Context) (store.Checkpoint, error) {
	if f.err == nil {
		return store.Checkpoint{}, store.ErrNotFound
	}
	return store.Checkpoint{}, f.err
}
func (f failingStore) LogIndexOf(context.Context, string) (int64, error) {
	return 0, store.ErrNotFound
}

func TestHandlerStoreFailures(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	s, _ := translog.NewSigner("example.org/mutual-log", priv)
	get := func(h http.Handler, path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		b, _ := io.ReadAll(rec.Result().Body)
		return rec.Code, string(b)
	}
	down := (&translog.Server{Store: failingStore{err: errors.New("store down")}, Signer: s}).Handler()
	for path, want := range map[string]int{
		"/log/checkpoint":       http.StatusServiceUnavailable,
		"/log/tile/0/000.p/1":   http.StatusServiceUnavailable,
		"/log/tile/entries/000": http.StatusServiceUnavailable,
		"/log/tile/0/x":         http.StatusBadRequest,
	} {
		if code, body := get(down, path); code != want {
			t.Errorf("GET %s with the store down: %d %s, want %d", path, code, body, want)
		}
	}
	if err := (&translog.Server{Store: failingStore{err: errors.New("store down")}, Signer: s}).Checkpoint(context.Background()); err == nil {
		t.Error("Checkpoint with the store down succeeded")
	}
	empty := (&translog.Server{Store: failingStore{}, Signer: s}).Handler()
	if code, _ := get(empty, "/log/checkpoint"); code != http.StatusNotFound {
		t.Errorf("checkpoint of a log that has none: %d, want 404", code)
	}
	if code, body := get(empty, "/log/key"); code != http.StatusOK || strings.TrimSpace(body) != s.Verifier {
		t.Errorf("/log/key: %d %q", code, body)
	}
	code, body := get(empty, "/v1/log/lookup?serial=00:AB:cd")
	var e struct{ Error, Code string }
	if code != http.StatusNotFound || json.Unmarshal([]byte(body), &e) != nil || e.Code != "not_found" || !strings.Contains(e.Error, "abcd") {
		t.Errorf("lookup of an unknown serial: %d %s", code, body)
	}
}

// TestLookupAndRun: the lookup hint takes a serial as openssl prints it, and
// the signer started by Run signs within its interval.
func TestLookupAndRun(t *testing.T) {
	e := startCA(t, "")
	cert, idx := e.enrollWithIndex(t, "spiffe://example.org/ns/prod/lookup")
	cl := e.logClient()
	hexSerial := strings.ToUpper(serialOf(cert))
	var colon []string
	for i := 0; i < len(hexSerial); i += 2 {
		colon = append(colon, hexSerial[i:min(i+2, len(hexSerial))])
	}
	for _, s := range []string{serialOf(cert), "00" + serialOf(cert), strings.Join(colon, ":")} {
		got, err := cl.Lookup(context.Background(), s)
		if err != nil || got != idx {
			t.Errorf("Lookup(%s) = %d, %v; want %d", s, got, err, idx)
		}
	}
	if _, err := cl.Lookup(context.Background(), "abcdef"); err == nil {
		t.Error("Lookup of an unknown serial succeeded")
	}
	cp := e.settle(t)
	// ProveCertificate of a certificate the log does not hold.
	other := e.Leaf(t, "spiffe://example.org/ns/prod/unlogged").Leaf()
	if _, _, err := cl.ProveCertificate(context.Background(), cp, other); !errors.Is(err, translog.ErrNotInLog) {
		t.Errorf("an unlogged certificate: %v, want ErrNotInLog", err)
	}
	// An older checkpoint does not cover a newer certificate: a clear hint.
	newer, _ := e.enrollWithIndex(t, "spiffe://example.org/ns/prod/newer")
	if _, _, err := cl.ProveCertificate(context.Background(), cp, newer); err == nil || !strings.Contains(err.Error(), "beyond the checkpoint") {
		t.Errorf("a certificate beyond the checkpoint: %v", err)
	}
	if _, err := cl.Entries(context.Background(), cp, 0, cp.Size+1); err == nil {
		t.Error("Entries beyond the checkpoint succeeded")
	}
	// A second signer on the same store, as another replica runs one:
	// both agree on the checkpoints, and Run stops with its context.
	ctx, cancel := context.WithCancel(context.Background())
	srv := &translog.Server{Store: e.Store(t), Signer: e.signer(t), Interval: 20 * time.Millisecond}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	waitCheckpoint(t, cl, e.logSize(t))
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
}
