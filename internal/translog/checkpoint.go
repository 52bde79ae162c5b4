package translog

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/mutual-tls/mutual/internal/translog/logkey"
)

// CheckpointFile is where a CA directory keeps the last checkpoint the CA
// saw in its store, beside the log's keys (logkey.Dir), so that the CA
// refuses a store that does not hold its log.
const CheckpointFile = logkey.Dir + "/checkpoint.json"

// Checkpoint is a verified tree head: the C2SP checkpoint body
//
//	<origin>
//	<size>
//	<base64 root hash>
type Checkpoint struct {
	Origin string
	Size   int64
	Hash   tlog.Hash
	// Note is the whole signed note, as served.
	Note []byte
}

// FormatCheckpoint returns the checkpoint body (without signature).
func FormatCheckpoint(origin string, size int64, h tlog.Hash) []byte {
	return []byte(fmt.Sprintf("%s\n%d\n%s\n", origin, size, base64.StdEncoding.EncodeToString(h[:])))
}

// SignCheckpoint signs a checkpoint body with s.
func SignCheckpoint(s *Signer, size int64, h tlog.Hash) ([]byte, error) {
	return note.Sign(&note.Note{Text: string(FormatCheckpoint(s.Name(), size, h))}, s)
}

// Errors that name which check failed.
var (
	ErrBadSignature = errors.New("checkpoint signature does not verify with the log's key")
	ErrMalformed    = errors.New("malformed checkpoint")
	ErrWrongOrigin  = errors.New("checkpoint is for another log")
)

// OpenCheckpoint verifies a signed checkpoint with the verifier key (the
// one-line NAME+HASH+KEY from `mutual log key`) and parses it.
func OpenCheckpoint(signed []byte, verifierKey string) (*Checkpoint, error) {
	v, err := note.NewVerifier(strings.TrimSpace(verifierKey))
	if err != nil {
		return nil, fmt.Errorf("log verifier key: %w", err)
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		var uv *note.UnverifiedNoteError
		if errors.As(err, &uv) {
			return nil, fmt.Errorf("%w (it is signed by %s)", ErrBadSignature, signerNames(uv.Note))
		}
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	lines := strings.SplitN(n.Text, "\n", 4)
	if len(lines) < 4 {
		return nil, fmt.Errorf("%w: fewer than three lines", ErrMalformed)
	}
	if lines[0] != v.Name() {
		return nil, fmt.Errorf("%w: origin %q, expected %q", ErrWrongOrigin, lines[0], v.Name())
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || lines[1] != strconv.FormatInt(size, 10) {
		return nil, fmt.Errorf("%w: bad tree size %q", ErrMalformed, lines[1])
	}
	raw, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(raw) != tlog.HashSize {
		return nil, fmt.Errorf("%w: bad root hash", ErrMalformed)
	}
	c := &Checkpoint{Origin: lines[0], Size: size, Note: bytes.Clone(signed)}
	copy(c.Hash[:], raw)
	return c, nil
}

func signerNames(n *note.Note) string {
	var names []string
	for _, s := range n.UnverifiedSigs {
		names = append(names, s.Name)
	}
	if len(names) == 0 {
		return "nobody"
	}
	return strings.Join(names, ", ")
}
