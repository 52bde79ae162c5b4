package translog

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
)

// Store is what the log server reads and writes.
type Store interface {
	LogSize(ctx context.Context) (int64, error)
	ReadHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error)
	LogEntries(ctx context.Context, start, end int64) ([][]byte, error)
	SaveCheckpoint(ctx context.Context, c store.Checkpoint) error
	LatestCheckpoint(ctx context.Context) (store.Checkpoint, error)
	LogIndexOf(ctx context.Context, serial string) (int64, error)
}

// TileHeight is the C2SP tlog-tiles height.
const TileHeight = 8

// Server signs checkpoints as the log grows and serves the log over HTTP.
type Server struct {
	Store  Store
	Signer *Signer
	// Interval between checkpoint checks; default 250ms, so that an
	// inclusion proof is available well within a second of issuance.
	Interval time.Duration
	Log      *slog.Logger

	mu     sync.Mutex
	latest store.Checkpoint
}

type hashReader struct {
	ctx context.Context
	s   Store
}

func (h hashReader) ReadHashes(idx []int64) ([]tlog.Hash, error) { return h.s.ReadHashes(h.ctx, idx) }

// Checkpoint signs a checkpoint for the current tree if it grew.
func (s *Server) Checkpoint(ctx context.Context) error {
	n, err := s.Store.LogSize(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	have := s.latest
	s.mu.Unlock()
	if have.Note != "" && n <= have.Size {
		return nil
	}
	if latest, err := s.Store.LatestCheckpoint(ctx); err == nil && latest.Size >= n {
		// Another replica signed it (or we did, before a restart).
		s.mu.Lock()
		s.latest = latest
		s.mu.Unlock()
		return nil
	}
	h, err := tlog.TreeHash(n, hashReader{ctx, s.Store})
	if err != nil {
		return fmt.Errorf("tree hash at %d: %w", n, err)
	}
	signed, err := SignCheckpoint(s.Signer, n, h)
	if err != nil {
		return err
	}
	cp := store.Checkpoint{Size: n, RootHash: h[:], Note: string(signed), CreatedAt: time.Now()}
	if err := s.Store.SaveCheckpoint(ctx, cp); err != nil {
		return err
	}
	s.mu.Lock()
	if cp.Size > s.latest.Size || s.latest.Note == "" {
		s.latest = cp
	}
	s.mu.Unlock()
	return nil
}

// Run signs checkpoints as the log grows until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	if s.Interval <= 0 {
		s.Interval = 250 * time.Millisecond
	}
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	for {
		if err := s.Checkpoint(ctx); err != nil && ctx.Err() == nil {
			s.Log.Warn("log checkpoint", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Handler serves, under /log/: checkpoint, key, and the C2SP tlog-tiles
// tile/<L>/<N>[.p/<W>] and tile/entries/<N>[.p/<W>]; and
// /v1/log/lookup?serial=S (the index of a certificate, a hint to be
// verified with a proof).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /log/checkpoint", s.checkpoint)
	mux.HandleFunc("GET /log/key", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, s.Signer.Verifier)
	})
	mux.HandleFunc("GET /log/tile/{path...}", s.tile)
	mux.HandleFunc("GET /v1/log/lookup", s.lookup)
	return mux
}

func (s *Server) checkpoint(w http.ResponseWriter, r *http.Request) {
	cp, err := s.Store.LatestCheckpoint(r.Context())
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			http.Error(w, "no checkpoint yet", http.StatusNotFound)
			return
		}
		http.Error(w, "the log's store is unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write([]byte(cp.Note))
}

// parseTile turns a C2SP path ("0/x001/234.p/5", "entries/005") into a tile.
func parseTile(path string) (tlog.Tile, error) {
	if rest, ok := strings.CutPrefix(path, "entries/"); ok {
		return tlog.ParseTilePath(fmt.Sprintf("tile/%d/data/%s", TileHeight, rest))
	}
	return tlog.ParseTilePath(fmt.Sprintf("tile/%d/%s", TileHeight, path))
}

func (s *Server) tile(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	t, err := parseTile(r.PathValue("path"))
	if err != nil {
		http.Error(w, "malformed tile path", http.StatusBadRequest)
		return
	}
	size, err := s.Store.LogSize(ctx)
	if err != nil {
		http.Error(w, "the log's store is unavailable", http.StatusServiceUnavailable)
		return
	}
	// The tile must lie within the tree: its last leaf must exist.
	if !tileWithin(t, size) {
		http.Error(w, "tile beyond the tree", http.StatusNotFound)
		return
	}
	var data []byte
	if t.L == -1 {
		start := t.N << TileHeight
		entries, err := s.Store.LogEntries(ctx, start, start+int64(t.W))
		if err != nil || len(entries) != t.W {
			http.Error(w, "entries unavailable", http.StatusServiceUnavailable)
			return
		}
		for _, e := range entries {
			if len(e) > MaxEntrySize {
				http.Error(w, "an entry of this tile exceeds the entry size limit", http.StatusInternalServerError)
				return
			}
			data = binary.BigEndian.AppendUint16(data, uint16(len(e)))
			data = append(data, e...)
		}
	} else {
		data, err = tlog.ReadTileData(t, hashReader{ctx, s.Store})
		if err != nil {
			http.Error(w, "tile unavailable", http.StatusServiceUnavailable)
			return
		}
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if t.W == 1<<TileHeight {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	}
	w.Write(data)
}

func (s *Server) lookup(w http.ResponseWriter, r *http.Request) {
	serial := r.URL.Query().Get("serial")
	n, err := pki.ParseSerial(serial)
	var idx int64
	if err == nil {
		serial = pki.FormatSerial(n)
		idx, err = s.Store.LogIndexOf(r.Context(), serial)
	}
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(map[string]string{"error": "no certificate " + serial + " in the log", "code": api.CodeNotFound})
		return
	}
	json.NewEncoder(w).Encode(map[string]int64{"index": idx})
}

// tileWithin reports whether every leaf a tile covers exists in a tree of
// size leaves, without overflowing on absurd levels.
func tileWithin(t tlog.Tile, size int64) bool {
	if t.N < 0 || t.W <= 0 || t.W > 1<<TileHeight {
		return false
	}
	leaves := t.N<<TileHeight + int64(t.W)
	if t.N > size>>TileHeight {
		return false
	}
	for l := 0; l < t.L; l++ {
		if leaves > size>>TileHeight {
			return false
		}
		leaves <<= TileHeight
	}
	return leaves <= size
}
