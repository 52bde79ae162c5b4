package translog_test

// Independent verification: an auditor who holds only the log's public key
// (CA_DIR/log.pub) checks the CA's log with golang.org/x/mod/sumdb/note and
// golang.org/x/mod/sumdb/tlog over plain net/http. Nothing in this file's
// verification path uses mutual's code: the auditor below knows only the
// published formats (C2SP signed-note checkpoints, C2SP tlog-tiles, and the
// entry's JSON), so a mistake shared by mutual's server and mutual's client
// cannot hide here. The CA itself is set up by helpers_test.go.

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/mutual-tls/mutual/internal/testwait"
)

// auditor reads a log over HTTP and verifies it with x/mod only.
type auditor struct {
	base     string // URL the log's /log/ paths hang from
	verifier note.Verifier
	hc       *http.Client

	mu      sync.Mutex
	fetched map[string]int // C2SP paths fetched, for the test to inspect
}

func newAuditor(t testing.TB, base, verifierKey string) *auditor {
	t.Helper()
	v, err := note.NewVerifier(strings.TrimSpace(verifierKey))
	if err != nil {
		t.Fatalf("log.pub is not a note verifier key: %v", err)
	}
	return &auditor{base: strings.TrimRight(base, "/"), verifier: v, hc: &http.Client{Timeout: 30 * time.Second}, fetched: map[string]int{}}
}

// get fetches BASE/log/PATH; any status but 200 is an error carrying it.
func (a *auditor) get(path string) ([]byte, error) {
	resp, err := a.hc.Get(a.base + "/log/" + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &httpStatusError{path: path, status: resp.StatusCode}
	}
	a.mu.Lock()
	a.fetched[path]++
	a.mu.Unlock()
	return b, nil
}

type httpStatusError struct {
	path   string
	status int
}

func (e *httpStatusError) Error() string {
	return fmt.Sprintf("GET /log/%s: HTTP %d", e.path, e.status)
}

// auditedCheckpoint is a checkpoint whose signature verified.
type auditedCheckpoint struct {
	origin string
	tree   tlog.Tree
	signed []byte
}

// checkpoint fetches /log/checkpoint, opens the signed note with the
// verifier key and parses the C2SP checkpoint body:
//
//	<origin>\n<decimal size>\n<base64 root hash>\n[extension lines]
func (a *auditor) checkpoint() (*auditedCheckpoint, error) {
	b, err := a.get("checkpoint")
	if err != nil {
		return nil, err
	}
	return a.openCheckpoint(b)
}

func (a *auditor) openCheckpoint(b []byte) (*auditedCheckpoint, error) {
	n, err := note.Open(b, note.VerifierList(a.verifier))
	if err != nil {
		return nil, fmt.Errorf("checkpoint signature: %w", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[len(lines)-1] != "" {
		return nil, fmt.Errorf("checkpoint body %q: want origin, size and root hash lines", n.Text)
	}
	if lines[0] != a.verifier.Name() {
		return nil, fmt.Errorf("checkpoint origin %q, the key is %q's", lines[0], a.verifier.Name())
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return nil, fmt.Errorf("checkpoint size %q", lines[1])
	}
	raw, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(raw) != tlog.HashSize {
		return nil, fmt.Errorf("checkpoint root hash %q", lines[2])
	}
	cp := &auditedCheckpoint{origin: lines[0], tree: tlog.Tree{N: size}, signed: b}
	copy(cp.tree.Hash[:], raw)
	return cp, nil
}

// waitCheckpoint polls until the checkpoint covers size entries.
func (a *auditor) waitCheckpoint(t testing.TB, size int64) *auditedCheckpoint {
	t.Helper()
	var cp *auditedCheckpoint
	testwait.EventuallyNil(t, func() error {
		c, err := a.checkpoint()
		if err != nil {
			return err
		}
		if c.tree.N < size {
			return fmt.Errorf("the checkpoint covers %d entries", c.tree.N)
		}
		cp = c
		return nil
	}, fmt.Sprintf("auditor: a checkpoint of %d entries", size))
	return cp
}

// c2spIndex writes a tile index as C2SP tlog-tiles does: decimal, in groups
// of three digits, every group but the last prefixed with "x".
func c2spIndex(n int64) string {
	s := fmt.Sprintf("%03d", n%1000)
	for n >= 1000 {
		n /= 1000
		s = fmt.Sprintf("x%03d/", n%1000) + s
	}
	return s
}

// c2spTilePath is the C2SP path of a tile of height 8:
// tile/<L>/<N>[.p/<W>], or tile/entries/<N>[.p/<W>] for entry bundles.
func c2spTilePath(tile tlog.Tile) string {
	level := strconv.Itoa(tile.L)
	if tile.L == -1 {
		level = "entries"
	}
	p := "tile/" + level + "/" + c2spIndex(tile.N)
	if tile.W != 1<<tile.H {
		p += ".p/" + strconv.Itoa(tile.W)
	}
	return p
}

// c2spTiles is a tlog.TileReader over C2SP paths. tlog.TileHashReader
// authenticates every tile it reads against the tree's signed hash.
type c2spTiles struct{ a *auditor }

func (c2spTiles) Height() int { return 8 }

func (r c2spTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, tile := range tiles {
		b, err := r.a.get(c2spTilePath(tile))
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

func (c2spTiles) SaveTiles([]tlog.Tile, [][]byte) {}

func (a *auditor) hashReader(cp *auditedCheckpoint) tlog.HashReader {
	return tlog.TileHashReader(cp.tree, c2spTiles{a})
}

// entries fetches every entry of the tree from the entry bundles (2-byte
// big-endian length, then the entry) and checks each one's record hash
// against the authenticated leaf hashes.
func (a *auditor) entries(cp *auditedCheckpoint) ([][]byte, error) {
	hr := a.hashReader(cp)
	var out [][]byte
	for start := int64(0); start < cp.tree.N; start += 256 {
		w := min(256, cp.tree.N-start)
		b, err := a.get(c2spTilePath(tlog.Tile{H: 8, L: -1, N: start / 256, W: int(w)}))
		if err != nil {
			return nil, err
		}
		var bundle [][]byte
		for len(b) > 0 {
			if len(b) < 2 || len(b) < 2+int(binary.BigEndian.Uint16(b)) {
				return nil, fmt.Errorf("entry bundle %d is truncated", start/256)
			}
			n := int(binary.BigEndian.Uint16(b))
			bundle = append(bundle, b[2:2+n])
			b = b[2+n:]
		}
		if int64(len(bundle)) != w {
			return nil, fmt.Errorf("entry bundle %d holds %d entries, want %d", start/256, len(bundle), w)
		}
		idx := make([]int64, w)
		for i := range idx {
			idx[i] = tlog.StoredHashIndex(0, start+int64(i))
		}
		leaves, err := hr.ReadHashes(idx)
		if err != nil {
			return nil, fmt.Errorf("leaf hashes %d..%d: %w", start, start+w, err)
		}
		for i, e := range bundle {
			if tlog.RecordHash(e) != leaves[i] {
				return nil, fmt.Errorf("entry %d does not hash to the tree's leaf", start+int64(i))
			}
		}
		out = append(out, bundle...)
	}
	return out, nil
}

// proveInclusion checks, as any RFC 6962 verifier would, that data is the
// entry at index idx of the tree of cp.
func (a *auditor) proveInclusion(cp *auditedCheckpoint, idx int64, data []byte) error {
	p, err := tlog.ProveRecord(cp.tree.N, idx, a.hashReader(cp))
	if err != nil {
		return fmt.Errorf("inclusion proof of %d in %d: %w", idx, cp.tree.N, err)
	}
	return tlog.CheckRecord(p, cp.tree.N, cp.tree.Hash, idx, tlog.RecordHash(data))
}

// proveConsistency checks that the tree of newer extends that of older.
func (a *auditor) proveConsistency(older, newer *auditedCheckpoint) error {
	if newer.tree.N < older.tree.N {
		return fmt.Errorf("the log shrank from %d to %d entries", older.tree.N, newer.tree.N)
	}
	p, err := tlog.ProveTree(newer.tree.N, older.tree.N, a.hashReader(newer))
	if err != nil {
		return fmt.Errorf("consistency proof %d→%d: %w", older.tree.N, newer.tree.N, err)
	}
	return tlog.CheckTree(p, newer.tree.N, newer.tree.Hash, older.tree.N, older.tree.Hash)
}

// auditedEntry is the entry's published JSON: the certificate's DER (base64)
// and who asked for it.
type auditedEntry struct {
	Version     int    `json:"v"`
	Cert        []byte `json:"cert"`
	RequestedBy string `json:"requested_by"`
}

// findCertificate returns the index of the entry holding cert.
func findCertificate(entries [][]byte, cert *x509.Certificate) (int64, error) {
	for i, raw := range entries {
		var e auditedEntry
		if err := json.Unmarshal(raw, &e); err != nil {
			return 0, fmt.Errorf("entry %d: %w", i, err)
		}
		if bytes.Equal(e.Cert, cert.Raw) {
			return int64(i), nil
		}
	}
	return 0, errors.New("not in the log")
}

func TestC2SPIndex(t *testing.T) {
	for n, want := range map[int64]string{0: "000", 5: "005", 999: "999", 1000: "x001/000", 1234067: "x001/x234/067"} {
		if got := c2spIndex(n); got != want {
			t.Errorf("c2spIndex(%d) = %q, want %q", n, got, want)
		}
	}
	if got := c2spTilePath(tlog.Tile{H: 8, L: 0, N: 1234, W: 5}); got != "tile/0/x001/234.p/5" {
		t.Errorf("partial tile path %q", got)
	}
	if got := c2spTilePath(tlog.Tile{H: 8, L: -1, N: 3, W: 256}); got != "tile/entries/003" {
		t.Errorf("entry bundle path %q", got)
	}
}

// TestIndependentVerification issues more than a full tile of certificates
// and checks the log as an outside auditor: the checkpoint's signature, every
// entry against the tree, the inclusion of one certificate at the index the
// CA answered, and the consistency of two checkpoints.
func TestIndependentVerification(t *testing.T) {
	e := startCA(t, "")
	target, claimed := e.enrollWithIndex(t, "spiffe://example.org/ns/prod/audited")
	e.issueMany(t, 300)

	a := newAuditor(t, e.HTTPURL, e.verifierKey)
	cp1 := a.waitCheckpoint(t, e.logSize(t))
	if cp1.origin != "example.org/mutual-log" {
		t.Errorf("origin %q", cp1.origin)
	}
	if cp1.tree.N <= 256 {
		t.Fatalf("tree of %d entries: the test needs more than one full tile", cp1.tree.N)
	}

	// Every entry, authenticated against the signed tree hash.
	entries, err := a.entries(cp1)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := tlog.TreeHash(cp1.tree.N, a.hashReader(cp1)); err != nil || h != cp1.tree.Hash {
		t.Fatalf("tree hash from the tiles: %v, %v; the checkpoint says %v", h, err, cp1.tree.Hash)
	}
	idx, err := findCertificate(entries, target)
	if err != nil {
		t.Fatalf("the enrolled certificate: %v", err)
	}
	if idx != claimed {
		t.Errorf("the certificate is entry %d, the CA answered log_index %d", idx, claimed)
	}
	var ent auditedEntry
	if err := json.Unmarshal(entries[idx], &ent); err != nil || ent.Version != 1 || !strings.HasPrefix(ent.RequestedBy, "token:") {
		t.Errorf("entry %d: %+v, %v: want version 1, requested by a token", idx, ent, err)
	}
	if err := a.proveInclusion(cp1, idx, entries[idx]); err != nil {
		t.Fatalf("inclusion: %v", err)
	}
	// A proof checks the bytes and the position: anything else fails.
	forged := bytes.Replace(entries[idx], []byte(`"token:`), []byte(`"tokeN:`), 1)
	if err := a.proveInclusion(cp1, idx, forged); err == nil {
		t.Error("an altered entry passed the inclusion proof")
	}
	if err := a.proveInclusion(cp1, idx+1, entries[idx]); err == nil {
		t.Error("the entry passed the inclusion proof at another index")
	}

	// The tiles fetched were C2SP paths: a full level-0 tile, a partial one,
	// the level-1 tile, a full and a partial entry bundle.
	a.mu.Lock()
	for _, p := range []string{"tile/0/000", fmt.Sprintf("tile/0/001.p/%d", cp1.tree.N-256), "tile/1/000.p/1", "tile/entries/000", fmt.Sprintf("tile/entries/001.p/%d", cp1.tree.N-256)} {
		if a.fetched[p] == 0 {
			t.Errorf("the auditor never fetched %s (fetched: %v)", p, a.fetched)
		}
	}
	a.mu.Unlock()

	// More issuance; the new checkpoint extends the old one.
	e.issueMany(t, 40)
	cp2 := a.waitCheckpoint(t, e.logSize(t))
	if cp2.tree.N <= cp1.tree.N {
		t.Fatalf("checkpoint did not grow: %d then %d", cp1.tree.N, cp2.tree.N)
	}
	if err := a.proveConsistency(cp1, cp2); err != nil {
		t.Fatalf("consistency %d→%d: %v", cp1.tree.N, cp2.tree.N, err)
	}
	if err := a.proveInclusion(cp2, idx, entries[idx]); err != nil {
		t.Fatalf("inclusion in the grown tree: %v", err)
	}
	other := *cp1
	other.tree.Hash[0] ^= 1
	if err := a.proveConsistency(&other, cp2); err == nil {
		t.Error("a consistency proof passed for a tree the log never had")
	}
	// The old checkpoint note still verifies on its own.
	if _, err := a.openCheckpoint(cp1.signed); err != nil {
		t.Error(err)
	}

	// What the server refuses: tiles beyond the tree, malformed paths.
	for path, want := range map[string]int{
		"tile/0/002": http.StatusNotFound,
		fmt.Sprintf("tile/0/001.p/%d", cp2.tree.N-255): http.StatusNotFound,
		"tile/entries/005": http.StatusNotFound,
		"tile/0/abc":       http.StatusBadRequest,
		"tile/0/001.p/0":   http.StatusBadRequest,
	} {
		_, err := a.get(path)
		var se *httpStatusError
		if !errors.As(err, &se) || se.status != want {
			t.Errorf("GET /log/%s: %v, want HTTP %d", path, err, want)
		}
	}
}
