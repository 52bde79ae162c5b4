package server

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
)

// TestOKIssued: the hand-built issuance answer is, byte for byte, what
// encoding/json writes for the api.IssueResponse it stands for, twice in a
// row (the second from the CA certificates' cache), with its length.
func TestOKIssued(t *testing.T) {
	c := testca.New(t)
	id := spiffeid.RequireFromPath(c.TrustDomain, "/ns/prod/web")
	leaf := c.Leaf(t, id.String(), testca.DNS("web.internal")).Leaf()
	is := &ca.Issued{
		ID: id, DER: leaf.Raw, Serial: pki.FormatSerial(leaf.SerialNumber),
		NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter.In(time.FixedZone("elsewhere", 3600)),
		Intermediates: []*x509.Certificate{c.Intermediate}, Roots: []*x509.Certificate{c.Root, c.Root}, LogIndex: 1234567,
	}
	for range 2 {
		rec := httptest.NewRecorder()
		if st, err := okIssued(rec, is); st != http.StatusOK || err != nil {
			t.Fatalf("okIssued = %d, %v", st, err)
		}
		body := rec.Body.Bytes()
		var got api.IssueResponse
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("the answer is not an IssueResponse: %v\n%s", err, body)
		}
		want := api.IssueResponse{
			SPIFFEID: is.ID.String(), Serial: is.Serial,
			ChainPEM:  string(pki.EncodeCertificates(leaf, c.Intermediate)),
			RootsPEM:  string(pki.EncodeCertificates(c.Root, c.Root)),
			NotBefore: is.NotBefore.UTC(), NotAfter: is.NotAfter.UTC(), LogIndex: is.LogIndex,
			ServerTime: got.ServerTime,
		}
		if got.ServerTime.IsZero() || time.Since(got.ServerTime) > time.Hour {
			t.Errorf("server_time %s, want the CA's clock now", got.ServerTime)
		}
		var enc bytes.Buffer
		json.NewEncoder(&enc).Encode(want)
		if !bytes.Equal(body, enc.Bytes()) {
			t.Fatalf("answer\n%s\nwant (encoding/json)\n%s", body, enc.Bytes())
		}
		h := rec.Result().Header
		if h.Get("Content-Type") != "application/json" || h.Get("Cache-Control") != "no-store" || h.Get("Content-Length") != strconv.Itoa(len(body)) {
			t.Errorf("headers %v for a %d-byte answer", h, len(body))
		}
	}
}

// TestAppendJSONText: text is escaped as encoding/json escapes it, whether
// it takes the PEM path or needs encoding/json's rules (HTML characters,
// control characters, non-ASCII, invalid UTF-8, line separators).
func TestAppendJSONText(t *testing.T) {
	for _, s := range []string{
		"", "plain", "-----BEGIN CERTIFICATE-----\nMIIB+/=\n-----END CERTIFICATE-----\n",
		`quote " and \ backslash`, "<script>&amp;</script>", "a & b", "a > b", "tab\there\r\x00\x1f\x7f",
		"é ü 日本", "\u2028\u2029", "bad \xff\xfe utf-8", "line\nthen <html>",
	} {
		want, _ := json.Marshal(s)
		if got := appendJSONString([]byte("x"), s); string(got) != "x"+string(want) {
			t.Errorf("%q: got %s, want %s", s, got[1:], want)
		}
	}
}
