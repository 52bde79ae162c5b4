package publish_test

import (
	"bytes"
	"crypto"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/testca"
)

var oidOCSPNoCheck = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}

// TestGoParsesCRL: crypto/x509 parses the DER and PEM CRLs, their signature
// verifies against the intermediate, and they list a revoked certificate with
// its reason.
func TestGoParsesCRL(t *testing.T) {
	t.Parallel()
	e := startCA(t, "")
	leaf := e.Enroll(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{}).Leaf()
	e.revoke(t, leaf, "keyCompromise")

	st, hdr, der := httpGet(t, e.crlURL())
	if st != http.StatusOK || hdr.Get("Content-Type") != "application/pkix-crl" {
		t.Fatalf("DER CRL: HTTP %d, Content-Type %q", st, hdr.Get("Content-Type"))
	}
	st, hdr, pemBody := httpGet(t, strings.TrimSuffix(e.crlURL(), ".crl")+".pem")
	if st != http.StatusOK {
		t.Fatalf("PEM CRL: HTTP %d", st)
	}
	block, rest := pem.Decode(pemBody)
	if block == nil || block.Type != "X509 CRL" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("PEM CRL: not one X509 CRL block: %q", pemBody)
	}
	for name, raw := range map[string][]byte{"DER": der, "PEM": block.Bytes} {
		crl, err := x509.ParseRevocationList(raw)
		if err != nil {
			t.Fatalf("%s: x509.ParseRevocationList: %v", name, err)
		}
		if err := crl.CheckSignatureFrom(e.Intermediate); err != nil {
			t.Fatalf("%s: signature does not verify against the intermediate: %v", name, err)
		}
		if err := crl.CheckSignatureFrom(e.Root); err == nil {
			t.Fatalf("%s: the CRL verifies against the root: it should be the intermediate's", name)
		}
		if !bytes.Equal(crl.RawIssuer, e.Intermediate.RawSubject) {
			t.Fatalf("%s: CRL issuer %s, want %s", name, crl.Issuer, e.Intermediate.Subject)
		}
		if !bytes.Equal(crl.AuthorityKeyId, e.Intermediate.SubjectKeyId) {
			t.Fatalf("%s: authority key id %x, want %x", name, crl.AuthorityKeyId, e.Intermediate.SubjectKeyId)
		}
		ent, ok := crlHas(crl, leaf)
		if !ok || ent.ReasonCode != 1 || ent.RevocationTime.IsZero() {
			t.Fatalf("%s: entry for %s: %+v (found %v), want keyCompromise (1)", name, serialOf(leaf), ent, ok)
		}
	}
	if hdr.Get("X-Mutual-Revocation-Seq") == "" {
		t.Fatal("the CRL carries no X-Mutual-Revocation-Seq header")
	}
	// Unknown CRL names are 404.
	for _, p := range []string{"/crl/00.crl", "/crl/" + strings.TrimSuffix(strings.TrimPrefix(e.crlURL(), e.HTTPURL+"/crl/"), ".crl") + ".txt"} {
		if st, _, _ := httpGet(t, e.HTTPURL+p); st != http.StatusNotFound {
			t.Fatalf("GET %s: HTTP %d, want 404", p, st)
		}
	}
}

// ocspPost and ocspGet send a DER OCSP request to the responder.
func ocspPost(t testing.TB, u string, req []byte) []byte {
	t.Helper()
	resp, err := http.Post(u, "application/ocsp-request", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/ocsp-response" {
		t.Fatalf("POST %s: HTTP %d, Content-Type %q", u, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return b
}

// ocspGet sends the request the RFC 6960 (appendix A.1) way: the URL
// encoding of the base64 of the DER.
func ocspGet(t testing.TB, u string, req []byte) []byte {
	t.Helper()
	st, hdr, b := httpGet(t, u+"/"+url.PathEscape(base64.StdEncoding.EncodeToString(req)))
	if st != http.StatusOK || hdr.Get("Content-Type") != "application/ocsp-response" {
		t.Fatalf("GET %s: HTTP %d, Content-Type %q", u, st, hdr.Get("Content-Type"))
	}
	return b
}

// TestGoParsesOCSP: golang.org/x/crypto/ocsp parses good, revoked and
// unknown answers, over GET and POST; the responder is a delegated one.
func TestGoParsesOCSP(t *testing.T) {
	t.Parallel()
	e := startCA(t, "")
	id := e.Enroll(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{})
	leaf, inter := id.Leaf(), id.Chain[1]
	u := leaf.OCSPServer[0]
	methods := map[string]func(testing.TB, string, []byte) []byte{"POST": ocspPost, "GET": ocspGet}

	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		req, err := ocsp.CreateRequest(leaf, inter, &ocsp.RequestOptions{Hash: h})
		if err != nil {
			t.Fatal(err)
		}
		for m, send := range methods {
			r, err := ocsp.ParseResponseForCert(send(t, u, req), leaf, inter)
			if err != nil {
				t.Fatalf("%s %v: %v", m, h, err)
			}
			if r.Status != ocsp.Good || r.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
				t.Fatalf("%s %v: status %d serial %x, want good for %x", m, h, r.Status, r.SerialNumber, leaf.SerialNumber)
			}
			if r.IssuerHash != h {
				t.Fatalf("%s %v: answered with issuer hash %v", m, h, r.IssuerHash)
			}
			if !r.NextUpdate.After(time.Now()) || r.ThisUpdate.After(time.Now()) {
				t.Fatalf("%s: validity %s – %s", m, r.ThisUpdate, r.NextUpdate)
			}
			checkResponder(t, r, inter)
		}
	}

	// Revoked, with the time and the reason, over both methods.
	before := time.Now().Add(-time.Second)
	e.revoke(t, leaf, "keyCompromise")
	req, _ := ocsp.CreateRequest(leaf, inter, nil)
	for m, send := range methods {
		r, err := ocsp.ParseResponseForCert(send(t, u, req), leaf, inter)
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		if r.Status != ocsp.Revoked || r.RevocationReason != ocsp.KeyCompromise || r.RevokedAt.Before(before.Truncate(time.Second)) {
			t.Fatalf("%s after revoke: status %d reason %d at %s", m, r.Status, r.RevocationReason, r.RevokedAt)
		}
	}

	// Unknown: this issuer, a serial it never issued.
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		unknown := unknownSerialRequest(t, inter, big.NewInt(0x5eed), h)
		for m, send := range methods {
			raw := send(t, u, unknown)
			r, err := ocsp.ParseResponse(raw, inter)
			if err != nil {
				t.Fatalf("%s %v unknown serial: %v", m, h, err)
			}
			if r.Status != ocsp.Unknown || r.SerialNumber.Cmp(big.NewInt(0x5eed)) != 0 {
				t.Fatalf("%s %v unknown serial: status %d serial %x", m, h, r.Status, r.SerialNumber)
			}
		}
	}

	// Another issuer: unauthorized.
	other := testca.New(t)
	foreign := other.Leaf(t, "spiffe://example.org/ns/prod/web")
	freq, _ := ocsp.CreateRequest(foreign.Leaf(), foreign.Chain[1], nil)
	for m, send := range methods {
		raw := send(t, u, freq)
		if !bytes.Equal(raw, ocsp.UnauthorizedErrorResponse) {
			t.Fatalf("%s for another issuer: %x, want unauthorized", m, raw)
		}
		if _, err := ocsp.ParseResponse(raw, nil); !isResponseError(err, ocsp.Unauthorized) {
			t.Fatalf("%s for another issuer: parsed as %v", m, err)
		}
	}
	// The same name under another key is another issuer too.
	keyHash := sha1.Sum([]byte("another key"))
	spoofed := marshalRequest(t, crypto.SHA1, sha1Name(inter), keyHash[:], leaf.SerialNumber)
	if raw := ocspPost(t, u, spoofed); !bytes.Equal(raw, ocsp.UnauthorizedErrorResponse) {
		t.Fatalf("request with the issuer's name and another key: %x, want unauthorized", raw)
	}

	// Malformed: malformedRequest, over both methods.
	for _, body := range [][]byte{nil, []byte("not DER"), {0x30, 0x03, 0x02, 0x01}, req[:len(req)/2]} {
		for m, send := range methods {
			if m == "GET" && len(body) == 0 {
				continue
			}
			raw := send(t, u, body)
			if !bytes.Equal(raw, ocsp.MalformedRequestErrorResponse) {
				t.Fatalf("%s malformed %x: %x, want malformedRequest", m, body, raw)
			}
		}
	}
	if st, _, raw := httpGet(t, u+"/"); st != http.StatusOK || !bytes.Equal(raw, ocsp.MalformedRequestErrorResponse) {
		t.Fatalf("GET with an empty request: HTTP %d %x", st, raw)
	}
	for _, p := range []string{"/!!!!", "/" + url.PathEscape("not base64 at all"), "/" + base64.URLEncoding.EncodeToString([]byte{0xfb, 0xff, 0xfe})} {
		if st, _, raw := httpGet(t, u+p); st != http.StatusOK || !bytes.Equal(raw, ocsp.MalformedRequestErrorResponse) {
			t.Fatalf("GET %s: HTTP %d %x, want malformedRequest", p, st, raw)
		}
	}
}

// TestOCSPGetEncodings: GET requests whose base64 holds '/', "//" and '+',
// URL-encoded as RFC 6960 asks, or with single slashes and pluses left as
// they are (as some clients send them), are answered.
//
// The requests are built so that they hold those characters whatever the
// CA's key: the serial carries a 3-byte group aligned on a base64 quantum
// that encodes as "////" or "+/+/". For the unescaped form the rest must hold
// no "//" (a path with one is cleaned by the HTTP server), which the issuer
// hashes decide; the test then tries each hash algorithm and three
// alignments (a requestorName of 0 to 2 extra bytes), twelve independent
// draws that all fail with a probability below 1e-20.
func TestOCSPGetEncodings(t *testing.T) {
	t.Parallel()
	e := startCA(t, "")
	id := e.Enroll(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{})
	leaf, inter := id.Leaf(), id.Chain[1]
	ask := func(serial *big.Int, path string) {
		t.Helper()
		st, _, raw := httpGet(t, leaf.OCSPServer[0]+"/"+path)
		if st != http.StatusOK {
			t.Fatalf("GET /ocsp/%s: HTTP %d", path, st)
		}
		r, err := ocsp.ParseResponse(raw, inter)
		if err != nil || r.Status != ocsp.Unknown || r.SerialNumber.Cmp(serial) != 0 {
			t.Fatalf("GET /ocsp/%s: %+v %v", path, r, err)
		}
	}

	// "////": always holds "//", sent URL-encoded.
	der, serial := craftedRequest(t, inter, crypto.SHA1, 0, [3]byte{0xff, 0xff, 0xff})
	b64 := base64.StdEncoding.EncodeToString(der)
	if !strings.Contains(b64, "//") {
		t.Fatalf("crafted request %s lacks //", b64)
	}
	ask(serial, url.PathEscape(b64))

	// "+/+/": single slashes and pluses, sent both raw and URL-encoded.
	var tried []string
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		for pad := 0; pad < 3; pad++ {
			der, serial := craftedRequest(t, inter, h, pad, [3]byte{0xfb, 0xff, 0xbf})
			b64 := base64.StdEncoding.EncodeToString(der)
			if !strings.Contains(b64, "+/+/") {
				t.Fatalf("crafted request %s lacks +/+/", b64)
			}
			if strings.Contains(b64, "//") {
				tried = append(tried, b64)
				continue
			}
			ask(serial, b64)
			ask(serial, url.PathEscape(b64))
			return
		}
	}
	t.Fatalf("every request had // in its issuer hashes: %q", tried)
}

// craftedRequest builds an OCSP request for issuer whose serial places group
// on a base64 quantum boundary, with zero bytes around it, so that its
// encoding holds the four characters group encodes to. pad lengthens a
// requestorName to move the issuer hashes against the quanta.
func craftedRequest(t testing.TB, issuer *x509.Certificate, h crypto.Hash, pad int, group [3]byte) ([]byte, *big.Int) {
	t.Helper()
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(issuer.RawSubjectPublicKeyInfo, &spki); err != nil {
		t.Fatal(err)
	}
	hn, hk := h.New(), h.New()
	hn.Write(issuer.RawSubject)
	hk.Write(spki.PublicKey.RightAlign())
	oid := map[crypto.Hash]asn1.ObjectIdentifier{
		crypto.SHA1:   {1, 3, 14, 3, 2, 26},
		crypto.SHA256: {2, 16, 840, 1, 101, 3, 4, 2, 1},
		crypto.SHA384: {2, 16, 840, 1, 101, 3, 4, 2, 2},
		crypto.SHA512: {2, 16, 840, 1, 101, 3, 4, 2, 3},
	}[h]
	type certID struct {
		HashAlgorithm pkix.AlgorithmIdentifier
		NameHash      []byte
		IssuerKeyHash []byte
		SerialNumber  *big.Int
	}
	type request struct{ Cert certID }
	type tbsRequest struct {
		RequestorName pkix.RDNSequence `asn1:"explicit,tag:1,optional"`
		RequestList   []request
	}
	type ocspRequest struct{ TBSRequest tbsRequest }
	var name pkix.RDNSequence
	if pad > 0 {
		name = pkix.Name{CommonName: strings.Repeat("x", pad)}.ToRDNSequence()
	}
	// The serial is the last field: 0x01, then eight zero bytes into which
	// group goes at the first quantum boundary with two serial bytes before it.
	content := make([]byte, 9)
	content[0] = 0x01
	build := func() []byte {
		der, err := asn1.Marshal(ocspRequest{tbsRequest{name, []request{{certID{
			pkix.AlgorithmIdentifier{Algorithm: oid, Parameters: asn1.NullRawValue},
			hn.Sum(nil), hk.Sum(nil), new(big.Int).SetBytes(content)}}}}})
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	n := len(build())
	start := n - len(content)
	g := (start + 2 + 2) / 3 * 3
	copy(content[g-start:], group[:])
	der := build()
	if len(der) != n || !bytes.Equal(der[g:g+3], group[:]) {
		t.Fatalf("crafted request: group not at %d in %x", g, der)
	}
	return der, new(big.Int).SetBytes(content)
}

func isResponseError(err error, status ocsp.ResponseStatus) bool {
	re, ok := err.(ocsp.ResponseError)
	return ok && re.Status == status
}

// checkResponder: the answer is signed by a delegated responder certificate
// issued by the intermediate, with the OCSPSigning usage and id-pkix-ocsp-nocheck.
func checkResponder(t testing.TB, r *ocsp.Response, inter *x509.Certificate) {
	t.Helper()
	c := r.Certificate
	if c == nil {
		t.Fatal("the response carries no responder certificate")
	}
	if err := c.CheckSignatureFrom(inter); err != nil {
		t.Fatalf("responder certificate not issued by the intermediate: %v", err)
	}
	if c.IsCA || bytes.Equal(c.Raw, inter.Raw) {
		t.Fatal("the answer is signed by the CA itself, not by a delegated responder")
	}
	if !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
		t.Fatalf("responder certificate usages %v lack OCSPSigning", c.ExtKeyUsage)
	}
	found := false
	for _, ext := range c.Extensions {
		if ext.Id.Equal(oidOCSPNoCheck) {
			found = true
			if ext.Critical || !bytes.Equal(ext.Value, []byte{0x05, 0x00}) {
				t.Fatalf("id-pkix-ocsp-nocheck: critical %v value %x, want a non-critical NULL", ext.Critical, ext.Value)
			}
		}
	}
	if !found {
		t.Fatal("responder certificate lacks id-pkix-ocsp-nocheck")
	}
	if c.NotAfter.After(inter.NotAfter) || time.Now().After(c.NotAfter) {
		t.Fatalf("responder certificate valid until %s (intermediate until %s)", c.NotAfter, inter.NotAfter)
	}
}

// unknownSerialRequest builds a request naming issuer and serial directly,
// for a serial no certificate carries.
func unknownSerialRequest(t testing.TB, issuer *x509.Certificate, serial *big.Int, h crypto.Hash) []byte {
	t.Helper()
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(issuer.RawSubjectPublicKeyInfo, &spki); err != nil {
		t.Fatal(err)
	}
	hn := h.New()
	hn.Write(issuer.RawSubject)
	hk := h.New()
	hk.Write(spki.PublicKey.RightAlign())
	return marshalRequest(t, h, hn.Sum(nil), hk.Sum(nil), serial)
}

func marshalRequest(t testing.TB, h crypto.Hash, nameHash, keyHash []byte, serial *big.Int) []byte {
	t.Helper()
	der, err := (&ocsp.Request{HashAlgorithm: h, IssuerNameHash: nameHash, IssuerKeyHash: keyHash, SerialNumber: serial}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func sha1Name(c *x509.Certificate) []byte {
	s := sha1.Sum(c.RawSubject)
	return s[:]
}
