package server

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/pki"
)

// caPEMs caches the PEM form of CA certificates (intermediates and roots),
// which every issuance answer carries, escaped as the inside of a JSON
// string: they change only on rotation, and a rotation brings new
// *x509.Certificate values, so the cache stays small.
var caPEMs sync.Map // *x509.Certificate → []byte

// appendCAPEMs appends the PEM encoding of certs, JSON-escaped, to dst.
func appendCAPEMs(dst []byte, certs []*x509.Certificate) []byte {
	for _, c := range certs {
		v, ok := caPEMs.Load(c)
		if !ok {
			v, _ = caPEMs.LoadOrStore(c, appendJSONText(nil, pki.EncodeCertificates(c)))
		}
		dst = append(dst, v.([]byte)...)
	}
	return dst
}

// answers recycles the buffers issuance answers are built in.
var answers = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// okIssued writes the answer to an issuance: an api.IssueResponse as
// encoding/json writes it (compact, for programs: the agent, the client
// library), byte for byte, but built without reflection. The CA
// certificates' part is escaped once (appendCAPEMs), the leaf's PEM is
// escaped as it is encoded, and the answer goes out in one write with its
// length.
func okIssued(w http.ResponseWriter, is *ca.Issued) (int, error) {
	bp := answers.Get().(*[]byte)
	b := append((*bp)[:0], `{"spiffe_id":`...)
	b = appendJSONString(b, is.ID.String())
	b = append(b, `,"serial":`...)
	b = appendJSONString(b, is.Serial)
	b = append(b, `,"chain_pem":"`...)
	jw := jsonTextWriter{&b}
	pem.Encode(jw, &pem.Block{Type: "CERTIFICATE", Bytes: is.DER})
	b = appendCAPEMs(b, is.Intermediates)
	b = append(b, `","roots_pem":"`...)
	b = appendCAPEMs(b, is.Roots)
	b = append(b, `","not_before":`...)
	b = appendJSONTime(b, is.NotBefore)
	b = append(b, `,"not_after":`...)
	b = appendJSONTime(b, is.NotAfter)
	b = append(b, `,"log_index":`...)
	b = strconv.AppendInt(b, is.LogIndex, 10)
	// The CA's clock, so a client whose clock is off checks the answer
	// against the time the CA issued it at.
	b = append(b, `,"server_time":`...)
	b = appendJSONTime(b, time.Now())
	b = append(b, "}\n"...)

	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b)
	if cap(b) <= 64<<10 {
		*bp = b
		answers.Put(bp)
	}
	return http.StatusOK, nil
}

// appendJSONTime appends t in UTC as time.Time's MarshalJSON writes it.
func appendJSONTime(dst []byte, t time.Time) []byte {
	dst = append(dst, '"')
	dst = t.UTC().AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

// appendJSONString appends s as a JSON string, as encoding/json writes it.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	dst = appendJSONText(dst, []byte(s))
	return append(dst, '"')
}

// appendJSONText appends s escaped as the inside of a JSON string, as
// encoding/json escapes it (HTML characters included). Printable ASCII and
// newlines, all that PEM, serials and SPIFFE IDs hold, are escaped here;
// text with anything else is left to encoding/json.
func appendJSONText(dst, s []byte) []byte {
	start := len(dst)
	for _, c := range s {
		switch {
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&':
			q, _ := json.Marshal(string(s))
			return append(dst[:start], q[1:len(q)-1]...)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// jsonTextWriter appends what is written to it, escaped as the inside of a
// JSON string.
type jsonTextWriter struct{ b *[]byte }

func (w jsonTextWriter) Write(p []byte) (int, error) {
	*w.b = appendJSONText(*w.b, p)
	return len(p), nil
}
