package publish_test

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
)

// TestRevokeBadInput: each bad revocation request gets a clear refusal
// naming the problem.
func TestRevokeBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := startCA(t, "")
	e.Enroll(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{})
	for _, tc := range []struct {
		name   string
		req    api.RevokeRequest
		status int
		code   string
		words  string
	}{
		{"unknown serial", api.RevokeRequest{Serial: "0123abcd"}, 404, "not_found", "not issued by this CA"},
		{"unknown serial, openssl style", api.RevokeRequest{Serial: "01:23:AB:CD"}, 404, "not_found", "not issued by this CA"},
		{"not a serial", api.RevokeRequest{Serial: "xyz"}, 400, "bad_serial", "not a certificate serial number"},
		{"zero serial", api.RevokeRequest{Serial: "00"}, 400, "bad_serial", "not a certificate serial number"},
		{"nothing named", api.RevokeRequest{}, 400, "bad_request", "exactly one"},
		{"two things named", api.RevokeRequest{Serial: "01", SPIFFEID: "spiffe://example.org/ns/prod/web"}, 400, "bad_request", "exactly one"},
		{"unknown identity", api.RevokeRequest{SPIFFEID: "spiffe://example.org/ns/prod/nobody"}, 404, "not_found", "no unexpired certificate"},
		{"identity that is not a SPIFFE ID", api.RevokeRequest{SPIFFEID: "web"}, 400, "", "not a SPIFFE ID"},
		{"node that is not a node", api.RevokeRequest{Node: "spiffe://example.org/ns/prod/web"}, 400, "bad_node", "not a node identity"},
		{"unknown node", api.RevokeRequest{Node: "spiffe://example.org/node/nowhere"}, 404, "not_found", "node"},
		{"unknown reason", api.RevokeRequest{SPIFFEID: "spiffe://example.org/ns/prod/web", Reason: "bored"}, 400, "bad_request", "unknown revocation reason"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.Admin.Revoke(ctx, tc.req)
			var ae *client.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("want an API error, got %v", err)
			}
			if ae.Status != tc.status || (tc.code != "" && ae.Code != tc.code) || !strings.Contains(err.Error(), tc.words) {
				t.Fatalf("got %d %s %q, want %d %s containing %q", ae.Status, ae.Code, err, tc.status, tc.code, tc.words)
			}
		})
	}
	// None of these revoked anything.
	list, err := e.Admin.ListCertificates(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list.Certificates {
		if c.RevokedAt != nil {
			t.Fatalf("%s (%s) was revoked by a refused request", c.Serial, c.SPIFFEID)
		}
	}
}

// TestOCSPMalformedOverHTTP: the responder on the wire answers every
// malformed body (the fuzz seed corpus, random bytes, mutations of a valid
// request, an oversized body) with a parseable OCSP error, never a crash,
// and still answers a valid request afterwards.
func TestOCSPMalformedOverHTTP(t *testing.T) {
	t.Parallel()
	e := startCA(t, "")
	id := e.Enroll(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{})
	leaf, inter := id.Leaf(), id.Chain[1]
	valid, err := ocsp.CreateRequest(leaf, inter, nil)
	if err != nil {
		t.Fatal(err)
	}
	var bodies [][]byte
	seeds, _ := filepath.Glob("testdata/fuzz/FuzzOCSPRequest/*")
	if len(seeds) == 0 {
		t.Fatal("no seeds in testdata/fuzz/FuzzOCSPRequest: they belong beside FuzzOCSPRequest")
	}
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		_, lit, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lit, "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		bodies = append(bodies, []byte(s))
	}
	if len(bodies) < 5 {
		t.Fatalf("only %d seed files", len(bodies))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		m := bytes.Clone(valid)
		switch i % 4 {
		case 0:
			m[rng.IntN(len(m))] ^= byte(1 + rng.IntN(255))
		case 1:
			m = m[:rng.IntN(len(m))]
		case 2:
			m = append(m, byte(rng.IntN(256)))
		default:
			m = make([]byte, rng.IntN(300))
			for j := range m {
				m[j] = byte(rng.IntN(256))
			}
		}
		bodies = append(bodies, m)
	}
	bodies = append(bodies, append(bytes.Clone(valid), bytes.Repeat([]byte{0}, 64<<10)...))

	for _, b := range bodies {
		for _, send := range []func(testing.TB, string, []byte) []byte{ocspPost, ocspGet} {
			if len(b) == 0 {
				continue
			}
			raw := send(t, e.ocspURL(), b)
			r, err := ocsp.ParseResponse(raw, inter)
			var re ocsp.ResponseError
			switch {
			case errors.As(err, &re):
				if re.Status != ocsp.Malformed && re.Status != ocsp.Unauthorized {
					t.Fatalf("body %x: error status %v", b, re.Status)
				}
			case err != nil:
				t.Fatalf("body %x: answer %x does not parse: %v", b, raw, err)
			default:
				// A mutation that still names this issuer: a signed answer.
				if r.Status != ocsp.Good && r.Status != ocsp.Unknown {
					t.Fatalf("body %x: status %d", b, r.Status)
				}
			}
		}
	}
	// Still alive and right.
	r, err := ocsp.ParseResponseForCert(ocspPost(t, e.ocspURL(), valid), leaf, inter)
	if err != nil || r.Status != ocsp.Good {
		t.Fatalf("after the malformed requests: %+v %v", r, err)
	}
	for _, h := range []crypto.Hash{crypto.SHA384, crypto.SHA512} {
		req, _ := ocsp.CreateRequest(leaf, inter, &ocsp.RequestOptions{Hash: h})
		r, err := ocsp.ParseResponseForCert(ocspGet(t, e.ocspURL(), req), leaf, inter)
		if err != nil || r.Status != ocsp.Good {
			t.Fatalf("%v: %+v %v", h, r, err)
		}
	}
	if st, _, _ := httpGet(t, e.HTTPURL+"/crl/x"); st != http.StatusNotFound {
		t.Fatalf("bad CRL name: HTTP %d", st)
	}
}
