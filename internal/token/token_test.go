package token_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/token"
)

var testFingerprint = sha256.Sum256([]byte("root certificate DER"))

// counter is a deterministic random source: 0, 1, 2, ... modulo 256.
type counter struct{ n byte }

func (c *counter) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = c.n
		c.n++
	}
	return len(p), nil
}

func TestNew(t *testing.T) {
	urls := []string{"https://ca.example:8443", "https://10.0.0.1"}
	tok, err := token.New(&counter{}, urls, testFingerprint)
	if err != nil {
		t.Fatal(err)
	}
	// The id takes the first 8 bytes of randomness, the secret the next 32.
	if want := "0001020304050607"; tok.ID != want {
		t.Errorf("ID = %q, want %q", tok.ID, want)
	}
	for i, b := range tok.Secret {
		if b != byte(8+i) {
			t.Fatalf("Secret[%d] = %d, want %d", i, b, 8+i)
		}
	}
	if !reflect.DeepEqual(tok.CAURLs, urls) || tok.RootFingerprint != testFingerprint {
		t.Errorf("New kept CAURLs %q and fingerprint %x, want %q and %x", tok.CAURLs, tok.RootFingerprint, urls, testFingerprint)
	}
}

func TestNewCryptoRand(t *testing.T) {
	a, err := token.New(nil, []string{"https://ca.example"}, testFingerprint)
	if err != nil {
		t.Fatal(err)
	}
	b, err := token.New(nil, []string{"https://ca.example"}, testFingerprint)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID == b.ID || a.Secret == b.Secret {
		t.Errorf("two tokens from crypto/rand share an id or a secret: %s, %s", a, b)
	}
	if len(a.ID) != 16 {
		t.Errorf("ID %q is not 16 hex digits", a.ID)
	}
}

func TestNewShortRandomness(t *testing.T) {
	for _, n := range []int{0, 7, 8, 39} {
		r := io.LimitReader(&counter{}, int64(n))
		if _, err := token.New(r, []string{"https://ca.example"}, testFingerprint); !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			t.Errorf("New with %d random bytes: err = %v, want one wrapping io.EOF or io.ErrUnexpectedEOF", n, err)
		}
	}
}

func TestStringParseRoundTrip(t *testing.T) {
	tok, err := token.New(&counter{}, []string{"https://ca.example:8443", "https://[::1]:8443/base"}, testFingerprint)
	if err != nil {
		t.Fatal(err)
	}
	s := tok.String()
	if !strings.HasPrefix(s, token.Prefix) {
		t.Fatalf("String() = %q, want prefix %q", s, token.Prefix)
	}
	if strings.ContainsAny(s, "=+/ \n") {
		t.Errorf("String() = %q is not unpadded base64url", s)
	}
	for _, in := range []string{s, "  " + s + "\n", "\t" + s + "\r\n"} {
		got, err := token.Parse(in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", in, err)
		}
		if !reflect.DeepEqual(got, tok) {
			t.Errorf("Parse(String()) = %+v, want %+v", got, tok)
		}
	}
}

func TestSecretMatches(t *testing.T) {
	tok, err := token.New(&counter{}, []string{"https://ca.example"}, testFingerprint)
	if err != nil {
		t.Fatal(err)
	}
	stored := tok.SecretHash()
	if want := sha256.Sum256(tok.Secret[:]); !bytes.Equal(stored, want[:]) {
		t.Errorf("SecretHash() = %x, want SHA-256 of the secret %x", stored, want)
	}
	if !bytes.Equal(token.HashSecret(tok.Secret[:]), stored) {
		t.Error("HashSecret(secret) differs from SecretHash()")
	}
	// The CA keeps only the hash; a parsed copy of the token must match it.
	parsed, err := token.Parse(tok.String())
	if err != nil {
		t.Fatal(err)
	}
	other := *parsed
	other.Secret[0] ^= 1
	tests := []struct {
		name   string
		tok    *token.Token
		stored []byte
		want   bool
	}{
		{"same token", tok, stored, true},
		{"parsed copy", parsed, stored, true},
		{"one bit of the secret differs", &other, stored, false},
		{"stored hash cut short", tok, stored[:31], false},
		{"nothing stored", tok, nil, false},
		{"secret stored instead of its hash", tok, tok.Secret[:], false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.tok.SecretMatches(tt.stored); got != tt.want {
				t.Errorf("SecretMatches = %v, want %v", got, tt.want)
			}
		})
	}
}

// encode builds a token string from a raw JSON payload.
func encode(payload string) string {
	return token.Prefix + base64.RawURLEncoding.EncodeToString([]byte(payload))
}

func TestParseMalformed(t *testing.T) {
	fp := hex.EncodeToString(testFingerprint[:])
	secret := base64.RawURLEncoding.EncodeToString(make([]byte, token.SecretSize))
	// valid returns the JSON of a valid token with one field's raw JSON
	// value replaced.
	valid := func(field, value string) string {
		fields := map[string]json.RawMessage{
			"ca": json.RawMessage(`["https://ca.example:8443"]`),
			"fp": json.RawMessage(`"` + fp + `"`),
			"id": json.RawMessage(`"0123456789abcdef"`),
			"s":  json.RawMessage(`"` + secret + `"`),
		}
		if field != "" {
			fields[field] = json.RawMessage(value)
		}
		b, err := json.Marshal(fields)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if _, err := token.Parse(encode(valid("", ""))); err != nil {
		t.Fatalf("the unmodified payload does not parse: %v", err)
	}

	tests := []struct {
		name string
		in   string
		// names is a piece of the message that points at the fault.
		names string
	}{
		{"empty", "", token.Prefix},
		{"no prefix", base64.RawURLEncoding.EncodeToString([]byte(valid("", ""))), token.Prefix},
		{"older version prefix", "mutual0." + encode(valid("", ""))[len(token.Prefix):], token.Prefix},
		{"prefix only", token.Prefix, ""},
		{"far too long", token.Prefix + strings.Repeat("A", 8192), "bytes"},
		{"padded base64", encode(valid("", "")) + "=", "base64url"},
		{"standard base64 alphabet", token.Prefix + "ab+/", "base64url"},
		{"cut when copied", encode(valid("", ""))[:40], ""},
		{"not JSON", encode("hello"), ""},
		{"JSON array", encode(`["https://ca.example"]`), ""},
		{"JSON null", encode(`null`), "CA address"},
		{"unknown field", encode(`{"ca":["https://ca.example"],"extra":1}`), "extra"},
		{"trailing JSON", encode(valid("", "") + `{}`), ""},
		{"trailing brace", encode(valid("", "") + `}`), ""},
		{"no CA", encode(valid("ca", `[]`)), "CA address"},
		{"CA not a list", encode(valid("ca", `"https://ca.example"`)), ""},
		{"http CA", encode(valid("ca", `["http://ca.example"]`)), "http://ca.example"},
		{"CA without host", encode(valid("ca", `["https:///path"]`)), "https:///path"},
		{"CA not a URL", encode(valid("ca", `["ca.example:8443"]`)), "ca.example:8443"},
		{"second CA bad", encode(valid("ca", `["https://ca.example","ftp://ca.example"]`)), "ftp://ca.example"},
		{"fingerprint missing", encode(valid("fp", `""`)), "fingerprint"},
		{"fingerprint short", encode(valid("fp", `"`+fp[:62]+`"`)), "fingerprint"},
		{"fingerprint long", encode(valid("fp", `"`+fp+`00"`)), "fingerprint"},
		{"fingerprint not hex", encode(valid("fp", `"`+strings.Repeat("z", 64)+`"`)), "fingerprint"},
		{"id missing", encode(valid("id", `""`)), "id"},
		{"id short", encode(valid("id", `"0123"`)), "id"},
		{"id not hex", encode(valid("id", `"0123456789abcdeg"`)), "id"},
		{"id a number", encode(valid("id", `1234567890123456`)), ""},
		{"secret missing", encode(valid("s", `""`)), "secret"},
		{"secret short", encode(valid("s", `"`+secret[:40]+`"`)), "secret"},
		{"secret padded", encode(valid("s", `"`+secret+`="`)), "secret"},
		{"secret too long", encode(valid("s", `"`+secret+`AAAA"`)), "secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := token.Parse(tt.in)
			if !errors.Is(err, token.ErrMalformed) {
				t.Fatalf("Parse = %+v, %v; want an error wrapping ErrMalformed", tok, err)
			}
			if tok != nil {
				t.Errorf("Parse returned a token with its error: %+v", tok)
			}
			if !strings.Contains(err.Error(), tt.names) {
				t.Errorf("error %q does not name %q", err, tt.names)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	fp := hex.EncodeToString(testFingerprint[:])
	secret := base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, token.SecretSize))
	tests := []struct {
		name    string
		payload string
	}{
		{"upper-case hex", `{"ca":["https://ca.example"],"fp":"` + strings.ToUpper(fp) + `","id":"0123456789ABCDEF","s":"` + secret + `"}`},
		{"fields in another order", `{"s":"` + secret + `","id":"0123456789abcdef","fp":"` + fp + `","ca":["https://ca.example"]}`},
		{"several CAs with paths and IPv6", `{"ca":["https://ca.example/mutual","https://[2001:db8::1]:8443"],"fp":"` + fp + `","id":"0123456789abcdef","s":"` + secret + `"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := token.Parse(encode(tt.payload))
			if err != nil {
				t.Fatal(err)
			}
			if tok.RootFingerprint != testFingerprint {
				t.Errorf("RootFingerprint = %x, want %x", tok.RootFingerprint, testFingerprint)
			}
			if !bytes.Equal(tok.Secret[:], bytes.Repeat([]byte{0xfb}, token.SecretSize)) {
				t.Errorf("Secret = %x", tok.Secret)
			}
			again, err := token.Parse(tok.String())
			if err != nil || !reflect.DeepEqual(again, tok) {
				t.Errorf("Parse(String()) = %+v, %v; want %+v", again, err, tok)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	tok, err := token.New(&counter{}, []string{"https://ca.example:8443"}, testFingerprint)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok.String())
	f.Add(" " + tok.String() + "\n")
	f.Add(token.Prefix)
	f.Add(encode(`{"ca":["https://a"],"fp":"","id":"","s":""}`))
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := token.Parse(s)
		if err != nil {
			if !errors.Is(err, token.ErrMalformed) {
				t.Fatalf("Parse error %v does not wrap ErrMalformed", err)
			}
			return
		}
		again, err := token.Parse(tok.String())
		if err != nil {
			t.Fatalf("Parse(%q) succeeded but its String() %q does not parse: %v", s, tok.String(), err)
		}
		if !reflect.DeepEqual(again, tok) {
			t.Fatalf("Parse(String()) = %+v, want %+v", again, tok)
		}
	})
}
