package translog

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/mutual-tls/mutual/internal/atomicfile"
	"github.com/mutual-tls/mutual/internal/pki"
)

// Client reads and verifies a log over HTTP. Nothing it returns is trusted
// before it is checked against a checkpoint signed by the verifier key.
type Client struct {
	// Base is the server's base URL (https://ca:8443 or http://ca:8080).
	Base string
	// VerifierKey is the log's note verifier key (NAME+HASH+KEY).
	VerifierKey string
	HTTP        *http.Client
}

func (c *Client) get(ctx context.Context, path string) ([]byte, error) {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.Base, "/")+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d: %s", path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// ServerKey fetches the verifier key the server publishes. It is only as
// trustworthy as the connection: prefer the copy ca init wrote (log.pub).
func (c *Client) ServerKey(ctx context.Context) (string, error) {
	b, err := c.get(ctx, "/log/key")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// Checkpoint fetches and verifies the latest checkpoint.
func (c *Client) Checkpoint(ctx context.Context) (*Checkpoint, error) {
	b, err := c.get(ctx, "/log/checkpoint")
	if err != nil {
		return nil, err
	}
	return OpenCheckpoint(b, c.VerifierKey)
}

// tileReader fetches tiles for tlog.TileHashReader, which checks each one
// against the tree hash before use.
type tileReader struct {
	ctx context.Context
	c   *Client
}

func (t tileReader) Height() int { return TileHeight }

func (t tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, tile := range tiles {
		p := tile.Path() // tile/8/L/N[.p/W]
		p = "/log/tile/" + strings.TrimPrefix(p, fmt.Sprintf("tile/%d/", TileHeight))
		b, err := t.c.get(t.ctx, p)
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

func (t tileReader) SaveTiles([]tlog.Tile, [][]byte) {}

// HashReader returns a tlog.HashReader for the tree of cp whose every hash
// is authenticated against cp.
func (c *Client) HashReader(ctx context.Context, cp *Checkpoint) tlog.HashReader {
	return tlog.TileHashReader(tlog.Tree{N: cp.Size, Hash: cp.Hash}, tileReader{ctx, c})
}

// ErrNotInLog means an entry is not at the index claimed.
var ErrNotInLog = errors.New("not in the log")

// ErrTampered means an entry served does not hash into the signed tree.
var ErrTampered = errors.New("the log was tampered with")

// Entries fetches entries [start, end) of the tree of cp and checks each
// against the tree: a tampered entry is refused.
func (c *Client) Entries(ctx context.Context, cp *Checkpoint, start, end int64) ([][]byte, error) {
	if end > cp.Size {
		return nil, fmt.Errorf("entries up to %d requested, the checkpoint has %d", end, cp.Size)
	}
	hr := c.HashReader(ctx, cp)
	var out [][]byte
	for i := start; i < end; {
		tile := i >> TileHeight
		w := min(int64(1)<<TileHeight, cp.Size-tile<<TileHeight)
		path := fmt.Sprintf("/log/tile/entries/%s", strings.TrimPrefix(tlog.Tile{H: TileHeight, L: -1, N: tile, W: int(w)}.Path(), fmt.Sprintf("tile/%d/data/", TileHeight)))
		b, err := c.get(ctx, path)
		if err != nil {
			return nil, err
		}
		bundle, err := splitBundle(b)
		if err != nil {
			return nil, fmt.Errorf("entry bundle %d: %w", tile, err)
		}
		if int64(len(bundle)) != w {
			return nil, fmt.Errorf("entry bundle %d has %d entries, expected %d", tile, len(bundle), w)
		}
		base := tile << TileHeight
		for j := i - base; j < w && base+j < end; j++ {
			idx := base + j
			hs, err := hr.ReadHashes([]int64{tlog.StoredHashIndex(0, idx)})
			if err != nil {
				return nil, fmt.Errorf("entry %d: %w", idx, err)
			}
			if tlog.RecordHash(bundle[j]) != hs[0] {
				return nil, fmt.Errorf("entry %d does not match the tree: %w", idx, ErrTampered)
			}
			out = append(out, bundle[j])
		}
		i = base + w
	}
	return out, nil
}

func splitBundle(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, errors.New("truncated entry bundle")
		}
		n := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		if len(b) < n {
			return nil, errors.New("truncated entry bundle")
		}
		out = append(out, b[:n])
		b = b[n:]
	}
	return out, nil
}

// Lookup asks the server for a certificate's index (a hint, verified by
// ProveCertificate).
func (c *Client) Lookup(ctx context.Context, serial string) (int64, error) {
	b, err := c.get(ctx, "/v1/log/lookup?serial="+serial)
	if err != nil {
		return 0, err
	}
	var v struct {
		Index int64 `json:"index"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return 0, err
	}
	return v.Index, nil
}

// ProveCertificate checks that cert is in the tree of cp: it finds its
// index, fetches the entry (authenticated against the tree), and checks
// that the entry holds exactly this certificate. It returns the entry.
func (c *Client) ProveCertificate(ctx context.Context, cp *Checkpoint, cert *x509.Certificate) (int64, *Entry, error) {
	idx, err := c.Lookup(ctx, pki.FormatSerial(cert.SerialNumber))
	if err != nil {
		return 0, nil, fmt.Errorf("certificate %x: %w (%v)", cert.SerialNumber, ErrNotInLog, err)
	}
	if idx >= cp.Size {
		return idx, nil, fmt.Errorf("certificate %x is at index %d, beyond the checkpoint's %d entries: retry in a second", cert.SerialNumber, idx, cp.Size)
	}
	raw, err := c.Entries(ctx, cp, idx, idx+1)
	if err != nil {
		return idx, nil, err
	}
	e, err := ParseEntry(raw[0])
	if err != nil {
		return idx, nil, err
	}
	if !bytes.Equal(e.Certificate, cert.Raw) {
		return idx, nil, fmt.Errorf("entry %d holds another certificate: %w", idx, ErrNotInLog)
	}
	// An explicit inclusion proof, as any RFC 6962 verifier would check it.
	hr := c.HashReader(ctx, cp)
	p, err := tlog.ProveRecord(cp.Size, idx, hr)
	if err != nil {
		return idx, nil, err
	}
	if err := tlog.CheckRecord(p, cp.Size, cp.Hash, idx, tlog.RecordHash(raw[0])); err != nil {
		return idx, nil, fmt.Errorf("inclusion proof for entry %d: %w", idx, err)
	}
	return idx, e, nil
}

// Errors of CheckConsistency.
var (
	ErrRollback = errors.New("the log shrank (rollback)")
	ErrFork     = errors.New("the log forked")
)

// CheckConsistency checks that newer extends older: the same tree, grown.
func (c *Client) CheckConsistency(ctx context.Context, older, newer *Checkpoint) error {
	switch {
	case newer.Size < older.Size:
		return fmt.Errorf("%w: checkpoint of %d entries after one of %d", ErrRollback, newer.Size, older.Size)
	case newer.Size == older.Size:
		if newer.Hash != older.Hash {
			return fmt.Errorf("%w: two different trees of %d entries", ErrFork, newer.Size)
		}
		return nil
	}
	if older.Size == 0 {
		return nil
	}
	p, err := tlog.ProveTree(newer.Size, older.Size, c.HashReader(ctx, newer))
	if err != nil {
		return fmt.Errorf("%w: no consistency proof from %d to %d entries: %v", ErrFork, older.Size, newer.Size, err)
	}
	if err := tlog.CheckTree(p, newer.Size, newer.Hash, older.Size, older.Hash); err != nil {
		return fmt.Errorf("%w: the tree of %d entries is not a prefix of the tree of %d: %v", ErrFork, older.Size, newer.Size, err)
	}
	return nil
}

// State is what a verifier remembers between runs.
type State struct {
	VerifierKey string `json:"verifier_key"`
	Checkpoint  string `json:"checkpoint"`
	// Next is the next entry a monitor will read.
	Next int64 `json:"next,omitempty"`
	// Issuers are the SHA-256 fingerprints of the issuing CAs seen.
	Issuers []string `json:"issuers,omitempty"`
}

// LoadState reads a state file; a missing file is an empty state.
func LoadState(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &State{}, nil
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &s, nil
}

// Save writes the state file atomically.
func (s *State) Save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(s, "", "  ")
	return atomicfile.WriteFile(path, append(b, '\n'), 0o600)
}
