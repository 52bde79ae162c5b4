package seal

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/authz"
)

// Version is the format version this package writes.
const Version = 1

// Magic starts every sealed file.
const Magic = "MUTUAL-SEAL"

// Limits that keep a hostile header from costing memory.
const (
	// MaxBodySize bounds the header body (the policy).
	MaxBodySize = 16 << 10
	// MaxWrappedSize bounds the wrapped data key.
	MaxWrappedSize = 4 << 10
	// NonceSize is the size of the header's random nonce.
	NonceSize = 16
)

// Errors a header can fail with; each is wrapped with what was found.
var (
	// ErrNotSealed: the input does not start with Magic.
	ErrNotSealed = errors.New("not a sealed file (it does not start with " + Magic + "): seal it with `mutual seal` first")
	// ErrUnknownVersion: the file is from a newer (or unknown) format.
	ErrUnknownVersion = errors.New("unknown sealed-file version: upgrade mutual to read it")
	// ErrMalformedHeader: the header is cut short or does not parse.
	ErrMalformedHeader = errors.New("malformed sealed-file header")
	// ErrBadPolicy: a policy that cannot be enforced.
	ErrBadPolicy = errors.New("invalid seal policy")
)

// Policy says who may unseal: a caller whose SPIFFE ID matches one of IDs
// (patterns as in internal/authz: exact, * for one segment, ** for the
// rest), who holds one of Roles when any are listed, before NotAfter when
// it is set.
type Policy struct {
	IDs      []string  `json:"ids"`
	Roles    []string  `json:"roles,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
}

// Validate checks that the policy can match someone: at least one ID
// pattern, every pattern parses, no empty role.
func (p Policy) Validate() error {
	if len(p.IDs) == 0 {
		return fmt.Errorf("%w: it names nobody: give at least one SPIFFE ID pattern (--to spiffe://TD/path)", ErrBadPolicy)
	}
	for _, s := range p.IDs {
		if _, err := authz.ParsePattern(s); err != nil {
			return fmt.Errorf("%w: %w", ErrBadPolicy, err)
		}
	}
	if slices.Contains(p.Roles, "") {
		return fmt.Errorf("%w: empty role", ErrBadPolicy)
	}
	return nil
}

// TrustDomains returns the trust domains the policy's patterns name.
func (p Policy) TrustDomains() []spiffeid.TrustDomain {
	var out []spiffeid.TrustDomain
	for _, s := range p.IDs {
		if _, err := authz.ParsePattern(s); err != nil {
			continue
		}
		rest, _ := strings.CutPrefix(s, "spiffe://")
		name, _, _ := strings.Cut(rest, "/")
		td, err := spiffeid.TrustDomainFromString(name)
		if err == nil && !slices.Contains(out, td) {
			out = append(out, td)
		}
	}
	return out
}

// DeniedError says why a policy refused a caller.
type DeniedError struct {
	ID     spiffeid.ID
	Reason string
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("%s may not unseal this data: %s", e.ID, e.Reason)
}

// Allow returns nil when the policy admits a caller with id and roles at
// now, else a *DeniedError saying which condition failed.
func (p Policy) Allow(id spiffeid.ID, roles []string, now time.Time) error {
	if !p.NotAfter.IsZero() && !now.Before(p.NotAfter) {
		return &DeniedError{ID: id, Reason: "the policy expired at " + p.NotAfter.UTC().Format(time.RFC3339)}
	}
	matched := false
	for _, s := range p.IDs {
		pat, err := authz.ParsePattern(s)
		if err == nil && pat.Match(id) {
			matched = true
			break
		}
	}
	if !matched {
		return &DeniedError{ID: id, Reason: fmt.Sprintf("its SPIFFE ID matches none of %q", p.IDs)}
	}
	if len(p.Roles) > 0 && !slices.ContainsFunc(p.Roles, func(r string) bool { return slices.Contains(roles, r) }) {
		return &DeniedError{ID: id, Reason: fmt.Sprintf("it holds none of the roles %q", p.Roles)}
	}
	return nil
}

// body is the authenticated part of the header.
type body struct {
	Policy Policy `json:"policy"`
	Nonce  []byte `json:"nonce"`
}

// KeySlot is the data key wrapped by a key-encryption key, and that key's id.
type KeySlot struct {
	KeyID   string
	Wrapped []byte
}

// Header is a parsed sealed-file header.
type Header struct {
	// Version is the format version.
	Version int
	// Policy is who may unseal.
	Policy Policy
	// Nonce is the random salt of the payload key.
	Nonce []byte
	// Slot is the wrapped data key.
	Slot KeySlot
	// body is the body exactly as written: what is authenticated.
	body []byte
}

// NewHeader makes the header of a new file for p, with a fresh nonce from
// random and no key slot yet.
func NewHeader(p Policy, random io.Reader) (*Header, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	nonce := make([]byte, NonceSize)
	if _, err := io.ReadFull(random, nonce); err != nil {
		return nil, fmt.Errorf("seal: nonce: %w", err)
	}
	b, err := json.Marshal(body{Policy: p, Nonce: nonce})
	if err != nil {
		return nil, err
	}
	return &Header{Version: Version, Policy: p, Nonce: nonce, body: b}, nil
}

// Body returns the authenticated body as written in the file.
func (h *Header) Body() []byte { return bytes.Clone(h.body) }

// BodyHash is the SHA-256 of the authenticated body: the label under which
// the data key is wrapped, and the file's name in the audit log.
func (h *Header) BodyHash() [32]byte { return bodyHash(h.body) }

func bodyHash(b []byte) [32]byte {
	return sha256.Sum256(append([]byte("mutual-seal v1 body\n"), b...))
}

// ParseBody parses an authenticated header body on its own, as a
// key-release service receives it in a wrap request.
func ParseBody(b []byte) (*Header, error) {
	if len(b) > MaxBodySize {
		return nil, fmt.Errorf("%w: body of %d bytes, more than %d", ErrMalformedHeader, len(b), MaxBodySize)
	}
	var bd body
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&bd); err != nil {
		return nil, fmt.Errorf("%w: body: %v", ErrMalformedHeader, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the body", ErrMalformedHeader)
	}
	if len(bd.Nonce) != NonceSize {
		return nil, fmt.Errorf("%w: nonce of %d bytes, want %d", ErrMalformedHeader, len(bd.Nonce), NonceSize)
	}
	if err := bd.Policy.Validate(); err != nil {
		return nil, err
	}
	return &Header{Version: Version, Policy: bd.Policy, Nonce: bd.Nonce, body: bytes.Clone(b)}, nil
}

// Marshal encodes the header, key slot included.
func (h *Header) Marshal() ([]byte, error) {
	if len(h.Slot.KeyID) == 0 || len(h.Slot.KeyID) > 255 {
		return nil, fmt.Errorf("seal: key id of %d bytes: want 1 to 255", len(h.Slot.KeyID))
	}
	if len(h.Slot.Wrapped) == 0 || len(h.Slot.Wrapped) > MaxWrappedSize {
		return nil, fmt.Errorf("seal: wrapped key of %d bytes: want 1 to %d", len(h.Slot.Wrapped), MaxWrappedSize)
	}
	var b bytes.Buffer
	b.WriteString(Magic)
	b.WriteByte(byte(h.Version))
	b.Write(binary.BigEndian.AppendUint16(nil, uint16(len(h.body))))
	b.Write(h.body)
	b.WriteByte(byte(len(h.Slot.KeyID)))
	b.WriteString(h.Slot.KeyID)
	b.Write(binary.BigEndian.AppendUint16(nil, uint16(len(h.Slot.Wrapped))))
	b.Write(h.Slot.Wrapped)
	return b.Bytes(), nil
}

// ParseHeader parses a header at the start of b and returns it with its
// length in bytes.
func ParseHeader(b []byte) (*Header, int, error) {
	r := bytes.NewReader(b)
	h, err := ReadHeader(r)
	if err != nil {
		return nil, 0, err
	}
	return h, len(b) - r.Len(), nil
}

// ReadHeader reads a header from r, leaving r at the payload. It reads no
// more than the header.
func ReadHeader(r io.Reader) (*Header, error) {
	magic := make([]byte, len(Magic)+1)
	if n, err := io.ReadFull(r, magic); err != nil {
		if n == 0 || !bytes.HasPrefix([]byte(Magic), magic[:n]) {
			return nil, ErrNotSealed
		}
		return nil, fmt.Errorf("%w: cut short in the magic", ErrMalformedHeader)
	}
	if string(magic[:len(Magic)]) != Magic {
		return nil, ErrNotSealed
	}
	if v := magic[len(Magic)]; v != Version {
		return nil, fmt.Errorf("%w: version %d (this mutual reads version %d)", ErrUnknownVersion, v, Version)
	}
	bodyBytes, err := readField(r, 2, MaxBodySize, "body")
	if err != nil {
		return nil, err
	}
	h, err := ParseBody(bodyBytes)
	if err != nil {
		return nil, err
	}
	keyID, err := readField(r, 1, 255, "key id")
	if err != nil {
		return nil, err
	}
	wrapped, err := readField(r, 2, MaxWrappedSize, "wrapped key")
	if err != nil {
		return nil, err
	}
	if len(keyID) == 0 || len(wrapped) == 0 {
		return nil, fmt.Errorf("%w: empty key slot", ErrMalformedHeader)
	}
	h.Slot = KeySlot{KeyID: string(keyID), Wrapped: wrapped}
	return h, nil
}

// readField reads a big-endian length of lenSize bytes, then that many
// bytes (at most max).
func readField(r io.Reader, lenSize, max int, what string) ([]byte, error) {
	lb := make([]byte, lenSize)
	if _, err := io.ReadFull(r, lb); err != nil {
		return nil, fmt.Errorf("%w: cut short before the %s length", ErrMalformedHeader, what)
	}
	n := int(lb[0])
	if lenSize == 2 {
		n = int(binary.BigEndian.Uint16(lb))
	}
	if n > max {
		return nil, fmt.Errorf("%w: %s of %d bytes, more than %d", ErrMalformedHeader, what, n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("%w: cut short in the %s", ErrMalformedHeader, what)
	}
	return b, nil
}
