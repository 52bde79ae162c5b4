package api_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/api"
)

func TestDecodeValid(t *testing.T) {
	t.Run("EnrollRequest", func(t *testing.T) {
		var got api.EnrollRequest
		body := `{"token":"mutual1.abc","csr":"-----BEGIN CERTIFICATE REQUEST-----\n","ttl":"30m"}`
		if err := api.Decode(strings.NewReader(body), &got); err != nil {
			t.Fatal(err)
		}
		want := api.EnrollRequest{Token: "mutual1.abc", CSR: "-----BEGIN CERTIFICATE REQUEST-----\n", TTL: api.Duration(30 * time.Minute)}
		if got != want {
			t.Errorf("got %+v, want %+v", got, want)
		}
	})
	t.Run("TokenRequest", func(t *testing.T) {
		var got api.TokenRequest
		body := "\n\t {\"spiffe_id\":\"spiffe://example.org/web\",\"ttl\":\"1h\",\"cert_ttl\":\"2h30m\",\n" +
			"\"dns_names\":[\"web.example.org\"],\"ip_addresses\":[\"10.0.0.1\",\"::1\"]}\r\n"
		if err := api.Decode(strings.NewReader(body), &got); err != nil {
			t.Fatal(err)
		}
		want := api.TokenRequest{
			SPIFFEID: "spiffe://example.org/web", TTL: api.Duration(time.Hour), CertTTL: api.Duration(150 * time.Minute),
			DNSNames: []string{"web.example.org"}, IPAddresses: []string{"10.0.0.1", "::1"},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}
	})
	t.Run("RevokeRequest", func(t *testing.T) {
		var got api.RevokeRequest
		if err := api.Decode(strings.NewReader(`{"serial":"0a1b","reason":"keyCompromise"}`), &got); err != nil {
			t.Fatal(err)
		}
		if want := (api.RevokeRequest{Serial: "0a1b", Reason: "keyCompromise"}); got != want {
			t.Errorf("got %+v, want %+v", got, want)
		}
	})
	t.Run("empty object", func(t *testing.T) {
		var got api.RenewRequest
		if err := api.Decode(strings.NewReader(`{}`), &got); err != nil {
			t.Fatal(err)
		}
		if got != (api.RenewRequest{}) {
			t.Errorf("got %+v, want the zero value", got)
		}
	})
	t.Run("exactly MaxBodyBytes", func(t *testing.T) {
		body := `{"csr":"` + strings.Repeat("A", api.MaxBodyBytes-len(`{"csr":""}`)) + `"}`
		if len(body) != api.MaxBodyBytes {
			t.Fatalf("test body is %d bytes", len(body))
		}
		var got api.RenewRequest
		if err := api.Decode(strings.NewReader(body), &got); err != nil {
			t.Fatal(err)
		}
	})
}

func TestDecodeRefuses(t *testing.T) {
	tests := []struct {
		name string
		body string
		// names is a piece of the message that points at the fault.
		names string
	}{
		{"empty", "", "empty"},
		{"white space only", " \n\t", "empty"},
		{"too large", `{"token":"` + strings.Repeat("A", api.MaxBodyBytes) + `"}`, "larger than"},
		// The size is judged before the content, whatever the decoder met first.
		{"too large and not JSON", "<" + strings.Repeat("A", api.MaxBodyBytes), "larger than"},
		{"too large after an object", `{"token":"abc"}` + strings.Repeat(" ", api.MaxBodyBytes), "larger than"},
		{"not JSON", "<request/>", "byte 1"},
		{"syntax error later", `{"token":"abc",}`, "byte"},
		{"truncated", `{"token":"abc"`, ""},
		{"unknown field", `{"token":"abc","spiffe_id":"spiffe://example.org/x"}`, "spiffe_id"},
		{"wrong type", `{"token":123}`, "token"},
		{"array", `[{"token":"abc"}]`, "EnrollRequest"},
		{"second object", `{"token":"abc"} {"token":"def"}`, "after the JSON object"},
		{"trailing garbage", `{"token":"abc"} x`, "after the JSON object"},
		{"trailing brace", `{"token":"abc"}}`, "after the JSON object"},
		{"trailing bracket", `{"token":"abc"}]`, "after the JSON object"},
		{"duration as number", `{"ttl":3600}`, "duration"},
		{"duration without unit", `{"ttl":"3600"}`, "3600"},
		{"duration nonsense", `{"ttl":"soon"}`, "soon"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v api.EnrollRequest
			err := api.Decode(strings.NewReader(tt.body), &v)
			if err == nil {
				t.Fatalf("Decode accepted %q as %+v", tt.body, v)
			}
			if !strings.Contains(err.Error(), tt.names) {
				t.Errorf("error %q does not name %q", err, tt.names)
			}
		})
	}
}

func TestDecodeListTypes(t *testing.T) {
	var v api.TokenRequest
	err := api.Decode(strings.NewReader(`{"dns_names":"web.example.org"}`), &v)
	if err == nil {
		t.Fatal("Decode accepted a string for a list")
	}
	for _, want := range []string{"dns_names", "[]string", "string"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

var errBrokenPipe = errors.New("broken pipe")

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errBrokenPipe }

func TestDecodeReadError(t *testing.T) {
	var v api.EnrollRequest
	r := io.MultiReader(strings.NewReader(`{"tok`), failingReader{})
	if err := api.Decode(r, &v); !errors.Is(err, errBrokenPipe) {
		t.Errorf("Decode = %v, want an error wrapping the read error", err)
	}
}

func TestDecodeReadsNoMoreThanTheLimit(t *testing.T) {
	// An endless body must not be read to its end.
	r := &countingReader{}
	var v api.EnrollRequest
	if err := api.Decode(r, &v); err == nil {
		t.Fatal("Decode accepted an endless body")
	}
	if r.n > api.MaxBodyBytes+1 {
		t.Errorf("Decode read %d bytes, want at most %d", r.n, api.MaxBodyBytes+1)
	}
}

type countingReader struct{ n int }

func (c *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	c.n += len(p)
	return len(p), nil
}

func TestDuration(t *testing.T) {
	tests := []struct {
		json string
		d    time.Duration
	}{
		{`"0s"`, 0},
		{`"1h30m0s"`, 90 * time.Minute},
		{`"15m0s"`, 15 * time.Minute},
		{`"1.5s"`, 1500 * time.Millisecond},
		{`"-1h0m0s"`, -time.Hour},
		{`"2562047h47m16.854775807s"`, time.Duration(1<<63 - 1)},
	}
	for _, tt := range tests {
		t.Run(tt.json, func(t *testing.T) {
			b, err := json.Marshal(api.Duration(tt.d))
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.json {
				t.Errorf("Marshal(%v) = %s, want %s", tt.d, b, tt.json)
			}
			var got api.Duration
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if time.Duration(got) != tt.d {
				t.Errorf("Unmarshal(%s) = %v, want %v", b, time.Duration(got), tt.d)
			}
		})
	}
}

func TestDurationUnmarshalShortForms(t *testing.T) {
	for in, want := range map[string]time.Duration{`"1h"`: time.Hour, `"90m"`: 90 * time.Minute, `"24h"`: 24 * time.Hour} {
		var got api.Duration
		if err := json.Unmarshal([]byte(in), &got); err != nil || time.Duration(got) != want {
			t.Errorf("Unmarshal(%s) = %v, %v; want %v", in, time.Duration(got), err, want)
		}
	}
}

func TestDurationUnmarshalRefuses(t *testing.T) {
	for _, in := range []string{`3600`, `true`, `{}`, `""`, `"1y"`, `"h"`, `"9999999999h"`} {
		var got api.Duration
		if err := json.Unmarshal([]byte(in), &got); err == nil {
			t.Errorf("Unmarshal(%s) = %v, want an error", in, time.Duration(got))
		}
	}
}

func TestOmitEmptyDurations(t *testing.T) {
	b, err := json.Marshal(api.EnrollRequest{Token: "t", CSR: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"token":"t","csr":"c"}`; string(b) != want {
		t.Errorf("Marshal = %s, want %s", b, want)
	}
}

// roundTrip checks that a decoded body survives being encoded and decoded
// again: what the client sends is what the server reads.
func roundTrip[T any](t *testing.T, body []byte) {
	var v T
	if err := api.Decode(bytes.NewReader(body), &v); err != nil {
		return
	}
	b1, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("Decode(%q) gave %+v, which does not marshal: %v", body, v, err)
	}
	var again T
	if err := api.Decode(bytes.NewReader(b1), &again); err != nil {
		t.Fatalf("Decode(%q) gave %+v, whose encoding %s does not decode: %v", body, v, b1, err)
	}
	// Compare encodings: an empty list and a missing one are the same body.
	b2, err := json.Marshal(again)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1, b2) {
		t.Fatalf("Decode(%q): round trip changed %s into %s", body, b1, b2)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"token":"mutual1.eyJ9","csr":"-----BEGIN CERTIFICATE REQUEST-----\nMII=\n-----END CERTIFICATE REQUEST-----\n","ttl":"1h"}`))
	f.Add([]byte(`{"spiffe_id":"spiffe://example.org/web","ttl":"15m","cert_ttl":"1h","dns_names":["web"],"ip_addresses":["10.0.0.1"]}`))
	f.Add([]byte(`{"serial":"00ff","spiffe_id":"spiffe://example.org/web","reason":"keyCompromise"}`))
	f.Add([]byte(`{"ttl":"-0.5h","dns_names":[]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		roundTrip[api.EnrollRequest](t, body)
		roundTrip[api.TokenRequest](t, body)
		roundTrip[api.RevokeRequest](t, body)
	})
}
