package seal_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/mutual-tls/mutual/seal"
)

// localKEK wraps data keys with a key held in memory, bound to the header
// body as the key-release service binds them: the stand-in for the service
// in tests of the format alone.
type localKEK struct{ key []byte }

func newLocalKEK(t testing.TB) *localKEK {
	k := make([]byte, chacha20poly1305.KeySize)
	rand.Read(k)
	return &localKEK{key: k}
}

func (k *localKEK) Wrap(_ context.Context, body, dataKey []byte) (seal.KeySlot, error) {
	h, err := seal.ParseBody(body)
	if err != nil {
		return seal.KeySlot{}, err
	}
	aead, _ := chacha20poly1305.NewX(k.key)
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	sum := h.BodyHash()
	return seal.KeySlot{KeyID: "local", Wrapped: aead.Seal(nonce, nonce, dataKey, sum[:])}, nil
}

func (k *localKEK) Unwrap(_ context.Context, h *seal.Header) ([]byte, error) {
	aead, _ := chacha20poly1305.NewX(k.key)
	w := h.Slot.Wrapped
	if len(w) < aead.NonceSize() {
		return nil, errors.New("short wrapped key")
	}
	sum := h.BodyHash()
	return aead.Open(nil, w[:aead.NonceSize()], w[aead.NonceSize():], sum[:])
}

var webPolicy = seal.Policy{IDs: []string{"spiffe://example.org/ns/prod/web"}}

func sealBytes(t testing.TB, k *localKEK, p seal.Policy, plain []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := seal.Seal(context.Background(), &out, bytes.NewReader(plain), p, k); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func unsealBytes(k *localKEK, sealed []byte) ([]byte, error) {
	var out bytes.Buffer
	err := seal.Unseal(context.Background(), &out, bytes.NewReader(sealed), k)
	return out.Bytes(), err
}

func TestRoundTrip(t *testing.T) {
	k := newLocalKEK(t)
	for _, n := range []int{0, 1, seal.ChunkSize - 1, seal.ChunkSize, seal.ChunkSize + 1, 2 * seal.ChunkSize, 5<<20 + 3} {
		plain := make([]byte, n)
		rand.Read(plain)
		sealed := sealBytes(t, k, webPolicy, plain)
		got, err := unsealBytes(k, sealed)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("%d bytes: the plaintext changed in the round trip", n)
		}
	}
}

// TestTamper flips, drops, swaps and appends, and expects each to fail
// with the error that names it.
func TestTamper(t *testing.T) {
	k := newLocalKEK(t)
	plain := make([]byte, 3*seal.ChunkSize+100)
	rand.Read(plain)
	sealed := sealBytes(t, k, webPolicy, plain)
	h, hlen, err := seal.ParseHeader(sealed)
	if err != nil {
		t.Fatal(err)
	}
	enc := seal.ChunkSize + chacha20poly1305.Overhead
	chunk := func(i int) []byte { return sealed[hlen+i*enc : min(hlen+(i+1)*enc, len(sealed))] }
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	bodyAt := bytes.Index(sealed, h.Body())
	policyAt := bytes.Index(sealed, []byte("ns/prod/web"))

	cases := []struct {
		name string
		data []byte
		want []error
	}{
		{"flip a bit of the magic", flip(sealed, 0), []error{seal.ErrNotSealed}},
		{"flip a bit of the version", flip(sealed, len(seal.Magic)), []error{seal.ErrUnknownVersion}},
		{"flip a bit of the nonce", flip(sealed, bodyAt+len(h.Body())-4), []error{seal.ErrMalformedHeader, seal.ErrTampered}},
		{"edit the policy", replace(sealed, policyAt, "ns/prod/api"), nil},
		{"flip a bit of the wrapped key", flip(sealed, hlen-1), nil},
		{"flip a bit of chunk 0", flip(sealed, hlen+10), []error{seal.ErrTampered}},
		{"flip a bit of the last chunk", flip(sealed, len(sealed)-1), []error{seal.ErrTampered}},
		{"drop the last chunk", join(sealed[:hlen], chunk(0), chunk(1), chunk(2)), []error{seal.ErrTruncated}},
		{"drop a middle chunk", join(sealed[:hlen], chunk(0), chunk(2), chunk(3)), []error{seal.ErrTampered}},
		{"swap two chunks", join(sealed[:hlen], chunk(1), chunk(0), chunk(2), chunk(3)), []error{seal.ErrTampered}},
		{"cut in the middle of a chunk", sealed[:hlen+enc+100], []error{seal.ErrTampered, seal.ErrTruncated}},
		{"cut after the header", sealed[:hlen], []error{seal.ErrTruncated}},
		{"append a byte", join(sealed, []byte{0}), []error{seal.ErrTampered, seal.ErrAppended}},
		{"append a chunk", join(sealed, chunk(0)), []error{seal.ErrTampered, seal.ErrAppended}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := unsealBytes(k, c.data)
			if err == nil {
				t.Fatal("tampered data unsealed without an error")
			}
			if bytes.Equal(got, plain) {
				t.Error("the whole plaintext came out of tampered data")
			}
			if c.want == nil {
				if !strings.Contains(err.Error(), "unwrapping the data key") {
					t.Errorf("error %q, want the unwrap to fail", err)
				}
				return
			}
			for _, w := range c.want {
				if errors.Is(err, w) {
					return
				}
			}
			t.Errorf("error %q, want one of %v", err, c.want)
		})
	}
}

// TestPolicyBoundToPayload: even with the data key in hand (a service that
// ignored the label), an edited policy breaks the payload.
func TestPolicyBoundToPayload(t *testing.T) {
	k := newLocalKEK(t)
	sealed := sealBytes(t, k, webPolicy, []byte("secret"))
	orig, _, err := seal.ParseHeader(sealed)
	if err != nil {
		t.Fatal(err)
	}
	dataKey, err := k.Unwrap(context.Background(), orig)
	if err != nil {
		t.Fatal(err)
	}
	edited := replace(sealed, bytes.Index(sealed, []byte("ns/prod/web")), "ns/prod/api")
	src := bytes.NewReader(edited)
	h, err := seal.ReadHeader(src)
	if err != nil {
		t.Fatal(err)
	}
	r, err := seal.NewReader(src, h, dataKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(r); !errors.Is(err, seal.ErrTampered) {
		t.Fatalf("edited policy with the right data key: %v, want ErrTampered", err)
	}
}

// TestAppendAfterFullFinalChunk: when the payload is a whole number of
// chunks, data after the final chunk is named as appended.
func TestAppendAfterFullFinalChunk(t *testing.T) {
	k := newLocalKEK(t)
	sealed := sealBytes(t, k, webPolicy, make([]byte, 2*seal.ChunkSize))
	_, err := unsealBytes(k, append(sealed, []byte("extra")...))
	if !errors.Is(err, seal.ErrAppended) {
		t.Fatalf("error %v, want ErrAppended", err)
	}
}

// TestTruncatedNeverCompletes: every cut of a sealed file is an error,
// never a clean end of data.
func TestTruncatedNeverCompletes(t *testing.T) {
	k := newLocalKEK(t)
	sealed := sealBytes(t, k, webPolicy, make([]byte, 2*seal.ChunkSize+5))
	_, hlen, _ := seal.ParseHeader(sealed)
	enc := seal.ChunkSize + chacha20poly1305.Overhead
	for _, cut := range []int{0, 5, hlen, hlen + 1, hlen + enc, hlen + 2*enc, len(sealed) - 1} {
		if _, err := unsealBytes(k, sealed[:cut]); err == nil {
			t.Errorf("cut at %d of %d: unsealed without an error", cut, len(sealed))
		}
	}
}

func TestBadInput(t *testing.T) {
	k := newLocalKEK(t)
	_, err := unsealBytes(k, []byte("hello, this is plain text"))
	if !errors.Is(err, seal.ErrNotSealed) || !strings.Contains(err.Error(), "mutual seal") {
		t.Errorf("plain text: %v, want ErrNotSealed naming `mutual seal`", err)
	}
	v2 := append([]byte(seal.Magic), 2, 0, 0)
	if _, err := unsealBytes(k, v2); !errors.Is(err, seal.ErrUnknownVersion) || !strings.Contains(err.Error(), "upgrade") {
		t.Errorf("version 2: %v, want ErrUnknownVersion saying to upgrade", err)
	}
	for _, p := range []seal.Policy{
		{},
		{IDs: []string{"web"}},
		{IDs: []string{"spiffe://example.org"}},
		{IDs: []string{"spiffe://example.org/a*"}},
		{IDs: []string{"spiffe://example.org/web"}, Roles: []string{""}},
	} {
		err := seal.Seal(context.Background(), io.Discard, strings.NewReader("x"), p, k)
		if !errors.Is(err, seal.ErrBadPolicy) {
			t.Errorf("policy %+v: %v, want ErrBadPolicy", p, err)
		}
	}
}

func TestPolicyAllow(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := seal.Policy{IDs: []string{"spiffe://example.org/ns/prod/*"}, Roles: []string{"reader"}, NotAfter: now.Add(time.Hour)}
	web := spiffeid.RequireFromString("spiffe://example.org/ns/prod/web")
	cases := []struct {
		name  string
		id    spiffeid.ID
		roles []string
		at    time.Time
		ok    bool
	}{
		{"match", web, []string{"reader"}, now, true},
		{"no role", web, nil, now, false},
		{"other role", web, []string{"writer"}, now, false},
		{"expired", web, []string{"reader"}, now.Add(time.Hour), false},
		{"other path", spiffeid.RequireFromString("spiffe://example.org/ns/dev/web"), []string{"reader"}, now, false},
		{"other trust domain", spiffeid.RequireFromString("spiffe://other.org/ns/prod/web"), []string{"reader"}, now, false},
	}
	for _, c := range cases {
		err := p.Allow(c.id, c.roles, c.at)
		if (err == nil) != c.ok {
			t.Errorf("%s: Allow = %v, want ok=%v", c.name, err, c.ok)
		}
		var d *seal.DeniedError
		if err != nil && !errors.As(err, &d) {
			t.Errorf("%s: %T, want *DeniedError", c.name, err)
		}
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 1
	return c
}

func replace(b []byte, i int, s string) []byte {
	c := bytes.Clone(b)
	copy(c[i:], s)
	return c
}
