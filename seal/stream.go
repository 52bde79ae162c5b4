package seal

import (
	"bufio"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/chacha20poly1305"
)

// ChunkSize is the plaintext size of every chunk but the last.
const ChunkSize = 64 << 10

// DataKeySize is the size of a data key.
const DataKeySize = 32

const (
	overhead     = chacha20poly1305.Overhead
	encChunkSize = ChunkSize + overhead
	lastFlag     = 1
)

// Errors of the payload; each is wrapped with the chunk number.
var (
	// ErrTruncated: the payload ends before its final chunk.
	ErrTruncated = errors.New("the sealed data is truncated: its final chunk is missing, so it is incomplete")
	// ErrTampered: a chunk does not authenticate under the key and header.
	ErrTampered = errors.New("the sealed data was altered (header, policy, chunk or chunk order) or the data key is wrong")
	// ErrAppended: data follows the final chunk.
	ErrAppended = errors.New("data was appended after the final chunk of the sealed data")
)

// payloadKey derives the chunk key from the data key and the header body.
func payloadKey(dataKey []byte, h *Header) (cipher.AEAD, error) {
	if len(dataKey) != DataKeySize {
		return nil, fmt.Errorf("seal: data key of %d bytes, want %d", len(dataKey), DataKeySize)
	}
	sum := h.BodyHash()
	k, err := hkdf.Key(sha256.New, dataKey, h.Nonce, "mutual-seal v1 payload "+string(sum[:]), chacha20poly1305.KeySize)
	if err != nil {
		return nil, err
	}
	return chacha20poly1305.New(k)
}

// chunkNonce is the STREAM nonce: an 11-byte big-endian counter and the
// final-chunk flag.
func chunkNonce(n uint64, last bool) []byte {
	nonce := make([]byte, chacha20poly1305.NonceSize)
	binary.BigEndian.PutUint64(nonce[3:11], n)
	if last {
		nonce[11] = lastFlag
	}
	return nonce
}

// Writer encrypts a payload chunk by chunk. Close writes the final chunk;
// without it the output is truncated and will not unseal.
type Writer struct {
	aead   cipher.AEAD
	w      io.Writer
	buf    []byte
	n      uint64
	err    error
	closed bool
}

// NewWriter returns a Writer that encrypts the payload of h under dataKey
// to w. The caller writes the header first.
func NewWriter(w io.Writer, h *Header, dataKey []byte) (*Writer, error) {
	aead, err := payloadKey(dataKey, h)
	if err != nil {
		return nil, err
	}
	return &Writer{aead: aead, w: w, buf: make([]byte, 0, encChunkSize)}, nil
}

// Write buffers p and writes every chunk that is full and not the last.
func (w *Writer) Write(p []byte) (int, error) {
	if w.closed {
		return 0, errors.New("seal: write after Close")
	}
	if w.err != nil {
		return 0, w.err
	}
	total := len(p)
	for len(p) > 0 {
		if len(w.buf) == ChunkSize {
			// More data follows, so this full chunk is not the last.
			if err := w.flush(false); err != nil {
				return total - len(p), err
			}
		}
		k := min(ChunkSize-len(w.buf), len(p))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
	}
	return total, nil
}

// Close writes the final chunk (empty only when the whole payload is).
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.err != nil {
		return w.err
	}
	return w.flush(true)
}

func (w *Writer) flush(last bool) error {
	out := w.aead.Seal(w.buf[:0], chunkNonce(w.n, last), w.buf, nil)
	if _, err := w.w.Write(out); err != nil {
		w.err = fmt.Errorf("seal: writing chunk %d: %w", w.n, err)
		return w.err
	}
	w.n++
	w.buf = w.buf[:0]
	return nil
}

// Reader decrypts a payload chunk by chunk. It returns plaintext only
// from chunks that authenticated, and io.EOF only after the final chunk
// did: a truncated payload ends in ErrTruncated.
type Reader struct {
	aead  cipher.AEAD
	r     *bufio.Reader
	buf   []byte
	plain []byte
	out   []byte
	n     uint64
	done  bool
	err   error
}

// NewReader returns a Reader of the payload that follows h in r (r is
// positioned after the header, as ReadHeader leaves it).
func NewReader(r io.Reader, h *Header, dataKey []byte) (*Reader, error) {
	aead, err := payloadKey(dataKey, h)
	if err != nil {
		return nil, err
	}
	return &Reader{aead: aead, r: bufio.NewReaderSize(r, encChunkSize), buf: make([]byte, encChunkSize), plain: make([]byte, 0, ChunkSize)}, nil
}

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.out) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.done {
			return 0, io.EOF
		}
		r.out, r.err = r.next()
	}
	n := copy(p, r.out)
	r.out = r.out[n:]
	return n, nil
}

// next reads and opens one chunk.
func (r *Reader) next() ([]byte, error) {
	n, err := io.ReadFull(r.r, r.buf)
	last := false
	switch {
	case err == io.EOF:
		return nil, fmt.Errorf("%w (it ends after chunk %d)", ErrTruncated, int64(r.n)-1)
	case err == io.ErrUnexpectedEOF:
		last = true
	case err != nil:
		return nil, fmt.Errorf("seal: reading chunk %d: %w", r.n, err)
	default:
		if _, perr := r.r.Peek(1); perr == io.EOF {
			last = true
		} else if perr != nil {
			return nil, fmt.Errorf("seal: reading chunk %d: %w", r.n+1, perr)
		}
	}
	chunk := r.buf[:n]
	if n < overhead {
		return nil, fmt.Errorf("%w (chunk %d is %d bytes, shorter than its tag)", ErrTruncated, r.n, n)
	}
	out, err := r.aead.Open(r.plain[:0], chunkNonce(r.n, last), chunk, nil)
	if err != nil {
		return nil, r.explain(chunk, last)
	}
	if last && len(out) == 0 && r.n > 0 {
		return nil, fmt.Errorf("%w: empty final chunk %d after a full one", ErrTampered, r.n)
	}
	r.n++
	r.done = last
	return out, nil
}

// explain tells apart why chunk r.n did not open: opened with the other
// final-chunk flag it says truncation (a non-final chunk at the end) or
// appended data (a final chunk followed by more); else it was altered.
func (r *Reader) explain(chunk []byte, last bool) error {
	if _, err := r.aead.Open(r.plain[:0], chunkNonce(r.n, !last), chunk, nil); err == nil {
		if last {
			return fmt.Errorf("%w (it ends after chunk %d)", ErrTruncated, r.n)
		}
		return fmt.Errorf("%w (after chunk %d)", ErrAppended, r.n)
	}
	return fmt.Errorf("%w: chunk %d does not authenticate", ErrTampered, r.n)
}
