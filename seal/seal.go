package seal

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
)

// Wrapper wraps a fresh data key for the header body it will protect
// (normally a key-release service client).
type Wrapper interface {
	Wrap(ctx context.Context, body, dataKey []byte) (KeySlot, error)
}

// Unwrapper returns the data key of a header, if the caller may have it
// (normally a key-release service client, which proves the caller's
// identity over mTLS).
type Unwrapper interface {
	Unwrap(ctx context.Context, h *Header) ([]byte, error)
}

// Seal encrypts src to dst for policy p under a fresh data key wrapped by
// w. It holds one chunk in memory whatever the size of src.
func Seal(ctx context.Context, dst io.Writer, src io.Reader, p Policy, w Wrapper) error {
	h, err := NewHeader(p, rand.Reader)
	if err != nil {
		return err
	}
	dataKey := make([]byte, DataKeySize)
	if _, err := rand.Read(dataKey); err != nil {
		return err
	}
	if h.Slot, err = w.Wrap(ctx, h.Body(), dataKey); err != nil {
		return fmt.Errorf("wrapping the data key: %w", err)
	}
	hb, err := h.Marshal()
	if err != nil {
		return err
	}
	if _, err := dst.Write(hb); err != nil {
		return fmt.Errorf("writing the header: %w", err)
	}
	sw, err := NewWriter(dst, h, dataKey)
	if err != nil {
		return err
	}
	if _, err := io.Copy(sw, src); err != nil {
		return err
	}
	return sw.Close()
}

// Open reads the header of src, has u unwrap its data key, and returns a
// Reader of the plaintext and the header.
func Open(ctx context.Context, src io.Reader, u Unwrapper) (*Reader, *Header, error) {
	h, err := ReadHeader(src)
	if err != nil {
		return nil, nil, err
	}
	dataKey, err := u.Unwrap(ctx, h)
	if err != nil {
		return nil, h, fmt.Errorf("unwrapping the data key: %w", err)
	}
	r, err := NewReader(src, h, dataKey)
	return r, h, err
}

// Unseal decrypts src to dst. On error dst may hold the plaintext of the
// chunks that authenticated before it: treat it as incomplete.
func Unseal(ctx context.Context, dst io.Writer, src io.Reader, u Unwrapper) error {
	r, _, err := Open(ctx, src, u)
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, r)
	return err
}
