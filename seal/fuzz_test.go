package seal_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/mutual-tls/mutual/seal"
)

// FuzzParse feeds arbitrary bytes to the header parser and, when a header
// parses, to the chunk reader under a fixed key: neither may panic, a
// parsed header must survive Marshal and ParseHeader unchanged, and the
// reader must end in io.EOF or one of the package's named errors.
func FuzzParse(f *testing.F) {
	k := newLocalKEK(f)
	for _, n := range []int{0, 1, 100} {
		f.Add(sealBytes(f, k, webPolicy, make([]byte, n)))
	}
	f.Add([]byte(seal.Magic + "\x01"))
	f.Add([]byte("not sealed"))
	dataKey := make([]byte, seal.DataKeySize)
	f.Fuzz(func(t *testing.T, data []byte) {
		h, n, err := seal.ParseHeader(data)
		if err != nil {
			if h != nil {
				t.Fatal("a header and an error")
			}
			return
		}
		again, err := h.Marshal()
		if err != nil {
			t.Fatalf("a parsed header does not marshal: %v", err)
		}
		if !bytes.Equal(again, data[:n]) {
			t.Fatalf("header changed in Marshal: %q then %q", data[:n], again)
		}
		r, err := seal.NewReader(bytes.NewReader(data[n:]), h, dataKey)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(io.Discard, r)
		if err != nil && !errors.Is(err, seal.ErrTampered) && !errors.Is(err, seal.ErrTruncated) && !errors.Is(err, seal.ErrAppended) {
			t.Fatalf("unnamed error %v", err)
		}
	})
}
