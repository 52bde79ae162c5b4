package policy_test

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/policy"
)

func testPolicy() *policy.Policy {
	return &policy.Policy{
		TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		DefaultTTL:  time.Hour,
		MaxTTL:      24 * time.Hour,
		MaxTokenTTL: 7 * 24 * time.Hour,
	}
}

var webID = spiffeid.RequireFromString("spiffe://example.org/ns/prod/web")

func webGrant() policy.Grant {
	return policy.Grant{
		ID:          webID,
		DNSNames:    []string{"web.example.org", "*.web.example.org"},
		IPAddresses: []net.IP{net.ParseIP("10.0.0.1"), net.ParseIP("2001:db8::1")},
	}
}

// wantRefused fails the test unless err is a *policy.RefusedError with code.
func wantRefused(t *testing.T, err error, code policy.Code) *policy.RefusedError {
	t.Helper()
	var re *policy.RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v (%T), want a *policy.RefusedError with code %q", err, err, code)
	}
	if re.Code != code {
		t.Fatalf("refused with code %q (%s), want %q", re.Code, re.Reason, code)
	}
	if re.Error() != re.Reason || re.Reason == "" {
		t.Errorf("Error() = %q, want the reason %q", re.Error(), re.Reason)
	}
	return re
}

func TestRefusedErrorWrapped(t *testing.T) {
	p := testPolicy()
	_, err := p.ParseID("spiffe://other.org/web")
	wrapped := fmt.Errorf("create token: %w", err)
	re := wantRefused(t, wrapped, policy.CodeForeignTrustDomain)
	if wrapped.Error() != "create token: "+re.Reason {
		t.Errorf("wrapped error = %q", wrapped)
	}
}

func TestParseID(t *testing.T) {
	p := testPolicy()
	tests := []struct {
		in   string
		code policy.Code // empty: accepted
		// names is a piece of the message that points at the fault.
		names string
	}{
		{"spiffe://example.org/web", "", ""},
		{"spiffe://example.org/ns/prod/sa/web", "", ""},
		{"spiffe://other.org/web", policy.CodeForeignTrustDomain, "other.org"},
		{"spiffe://example.org", policy.CodeBadIdentity, "has no path"},
		{"spiffe://example.org/", policy.CodeBadIdentity, "spiffe://example.org/"},
		{"https://example.org/web", policy.CodeBadIdentity, "https://example.org/web"},
		{"spiffe://EXAMPLE.org/web", policy.CodeBadIdentity, "EXAMPLE"},
		{"spiffe://example.org/web/", policy.CodeBadIdentity, "web/"},
		{"spiffe://example.org/a/../b", policy.CodeBadIdentity, ".."},
		{"", policy.CodeBadIdentity, "spiffe://example.org/PATH"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			id, err := p.ParseID(tt.in)
			if tt.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				if id.String() != tt.in {
					t.Errorf("ParseID = %s, want %s", id, tt.in)
				}
				return
			}
			re := wantRefused(t, err, tt.code)
			if !strings.Contains(re.Reason, tt.names) {
				t.Errorf("reason %q does not name %q", re.Reason, tt.names)
			}
		})
	}
}

func TestCheckIdentity(t *testing.T) {
	p := testPolicy()
	tests := []struct {
		name string
		id   spiffeid.ID
		code policy.Code
	}{
		{"workload", webID, ""},
		{"zero", spiffeid.ID{}, policy.CodeBadIdentity},
		{"trust domain only", spiffeid.RequireFromString("spiffe://example.org"), policy.CodeBadIdentity},
		{"foreign", spiffeid.RequireFromString("spiffe://example.com/web"), policy.CodeForeignTrustDomain},
		{"sub-domain is foreign", spiffeid.RequireFromString("spiffe://prod.example.org/web"), policy.CodeForeignTrustDomain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := p.CheckIdentity(tt.id)
			if tt.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantRefused(t, err, tt.code)
		})
	}
}

func TestLifetime(t *testing.T) {
	const h = time.Hour
	tests := []struct {
		name      string
		p         policy.Policy // zero: testPolicy (default 1h, max 24h)
		requested time.Duration
		grantTTL  time.Duration
		want      time.Duration
		refused   bool
	}{
		{name: "default", want: h},
		{name: "grant", grantTTL: 2 * h, want: 2 * h},
		{name: "grant above the maximum is cut", grantTTL: 48 * h, want: 24 * h},
		{name: "request below the grant", requested: 30 * time.Minute, grantTTL: 2 * h, want: 30 * time.Minute},
		{name: "request equal to the grant", requested: 2 * h, grantTTL: 2 * h, want: 2 * h},
		{name: "request above the default, no grant", requested: 12 * h, want: 12 * h},
		{name: "request equal to the maximum", requested: 24 * h, want: 24 * h},
		{name: "request above the grant", requested: 3 * h, grantTTL: 2 * h, refused: true},
		{name: "request above the maximum", requested: 25 * h, refused: true},
		{name: "request above the maximum with a larger grant", requested: 25 * h, grantTTL: 48 * h, refused: true},
		{name: "negative request", requested: -time.Second, refused: true},
		{name: "negative grant means the default", grantTTL: -h, want: h},
		{name: "default above the maximum is cut", p: policy.Policy{DefaultTTL: 48 * h, MaxTTL: 24 * h}, want: 24 * h},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &tt.p
			if p.MaxTTL == 0 {
				p = testPolicy()
			}
			got, err := p.Lifetime(tt.requested, policy.Grant{ID: webID, TTL: tt.grantTTL})
			if tt.refused {
				wantRefused(t, err, policy.CodeLifetime)
				if got != 0 {
					t.Errorf("Lifetime = %v with its error, want 0", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("Lifetime = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCheckTokenGrant(t *testing.T) {
	const h = time.Hour
	tests := []struct {
		name     string
		id       string
		certTTL  time.Duration
		tokenTTL time.Duration
		code     policy.Code
	}{
		{"valid", "spiffe://example.org/web", 0, 15 * time.Minute, ""},
		{"longest token, longest certificate", "spiffe://example.org/web", 24 * h, 7 * 24 * h, ""},
		{"no identity", "", 0, h, policy.CodeBadIdentity},
		{"foreign identity", "spiffe://example.com/web", 0, h, policy.CodeForeignTrustDomain},
		{"identity without path", "spiffe://example.org", 0, h, policy.CodeBadIdentity},
		{"zero token lifetime", "spiffe://example.org/web", 0, 0, policy.CodeLifetime},
		{"negative token lifetime", "spiffe://example.org/web", 0, -h, policy.CodeLifetime},
		{"token lifetime above the maximum", "spiffe://example.org/web", 0, 7*24*h + time.Second, policy.CodeLifetime},
		{"certificate lifetime above the maximum", "spiffe://example.org/web", 25 * h, h, policy.CodeLifetime},
		{"negative certificate lifetime", "spiffe://example.org/web", -h, h, policy.CodeLifetime},
	}
	p := testPolicy()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var id spiffeid.ID
			if tt.id != "" {
				id = spiffeid.RequireFromString(tt.id)
			}
			err := p.CheckTokenGrant(policy.Grant{ID: id, TTL: tt.certTTL}, tt.tokenTTL)
			if tt.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantRefused(t, err, tt.code)
		})
	}
}

func TestCheckKey(t *testing.T) {
	ec := func(c elliptic.Curve) crypto.PublicKey {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k.Public()
	}
	// CheckKey reads only the modulus size, so RSA keys need not be real.
	rsaBits := func(n int) crypto.PublicKey {
		return &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), uint(n-1)), E: 65537}
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pub  any
		ok   bool
		// names is a piece of the message that points at the fault.
		names string
	}{
		{"ECDSA P-256", ec(elliptic.P256()), true, ""},
		{"ECDSA P-384", ec(elliptic.P384()), true, ""},
		{"ECDSA P-521", ec(elliptic.P521()), true, ""},
		{"ECDSA P-224", ec(elliptic.P224()), false, "P-224"},
		{"Ed25519", edPub, true, ""},
		{"RSA 1024", rsaBits(1024), false, "1024"},
		{"RSA 2047", rsaBits(2047), false, "2047"},
		{"RSA 2048", rsaBits(2048), true, ""},
		{"RSA 8192", rsaBits(8192), true, ""},
		{"RSA 8193", rsaBits(8193), false, "8193"},
		{"X25519", x25519.PublicKey(), false, "ecdh"},
		{"nil", nil, false, "nil"},
		{"private key", ed25519.NewKeyFromSeed(make([]byte, 32)), false, "PrivateKey"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := policy.CheckKey(tt.pub)
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			re := wantRefused(t, err, policy.CodeWeakKey)
			if !strings.Contains(re.Reason, tt.names) {
				t.Errorf("reason %q does not name %q", re.Reason, tt.names)
			}
		})
	}
}

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
)

func basicConstraints(t *testing.T, isCA bool) pkix.Extension {
	type bc struct {
		IsCA bool `asn1:"optional"`
	}
	v, err := asn1.Marshal(bc{isCA})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidBasicConstraints, Critical: true, Value: v}
}

// keyUsage encodes the keyUsage bits named by their RFC 5280 numbers
// (digitalSignature 0, keyCertSign 5, cRLSign 6).
func keyUsage(t *testing.T, bits ...int) pkix.Extension {
	b := make([]byte, 2)
	for _, n := range bits {
		b[n/8] |= 0x80 >> (n % 8)
	}
	v, err := asn1.Marshal(asn1.BitString{Bytes: b, BitLength: 9})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidKeyUsage, Critical: true, Value: v}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

var (
	rsa1024Once sync.Once
	rsa1024Key  *rsa.PrivateKey
)

// makeCSR signs tmpl with a fresh key of the given kind.
func makeCSR(t *testing.T, key string, tmpl x509.CertificateRequest) *x509.CertificateRequest {
	t.Helper()
	var k crypto.Signer
	var err error
	switch key {
	case "", "p256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p224":
		k, err = ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	case "ed25519":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	case "rsa1024":
		rsa1024Once.Do(func() { rsa1024Key, err = rsa.GenerateKey(rand.Reader, 1024) })
		k = rsa1024Key
	default:
		t.Fatalf("unknown key kind %q", key)
	}
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &tmpl, k)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func TestCheckCSR(t *testing.T) {
	p := testPolicy()
	tests := []struct {
		name string
		key  string
		tmpl x509.CertificateRequest
		code policy.Code // empty: accepted
		// names is a piece of the message that points at the fault.
		names string
	}{
		{name: "bare", tmpl: x509.CertificateRequest{}},
		{name: "subject is ignored", tmpl: x509.CertificateRequest{Subject: pkix.Name{CommonName: "admin", Organization: []string{"root"}}}},
		{name: "Ed25519", key: "ed25519"},
		{name: "granted identity", tmpl: x509.CertificateRequest{URIs: []*url.URL{webID.URL()}}},
		{name: "granted names", tmpl: x509.CertificateRequest{
			DNSNames:    []string{"web.example.org", "*.web.example.org"},
			IPAddresses: []net.IP{net.ParseIP("10.0.0.1"), net.ParseIP("2001:db8::1")},
		}},
		{name: "DNS name in upper case", tmpl: x509.CertificateRequest{DNSNames: []string{"WEB.Example.ORG"}}},
		{name: "not a CA", tmpl: x509.CertificateRequest{ExtraExtensions: []pkix.Extension{basicConstraints(t, false)}}},
		{name: "digitalSignature", tmpl: x509.CertificateRequest{ExtraExtensions: []pkix.Extension{keyUsage(t, 0)}}},

		{name: "weak RSA", key: "rsa1024", code: policy.CodeWeakKey, names: "1024"},
		{name: "weak curve", key: "p224", code: policy.CodeWeakKey, names: "P-224"},
		{name: "CA flag", tmpl: x509.CertificateRequest{ExtraExtensions: []pkix.Extension{basicConstraints(t, true)}}, code: policy.CodeCARequested},
		{name: "keyCertSign", tmpl: x509.CertificateRequest{ExtraExtensions: []pkix.Extension{keyUsage(t, 0, 5)}}, code: policy.CodeCARequested},
		{name: "cRLSign", tmpl: x509.CertificateRequest{ExtraExtensions: []pkix.Extension{keyUsage(t, 6)}}, code: policy.CodeCARequested},
		{name: "malformed basicConstraints", tmpl: x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: oidBasicConstraints, Value: []byte{0x04, 0x01, 0xff}}}}, code: policy.CodeBadCSR, names: "basicConstraints"},
		{name: "malformed keyUsage", tmpl: x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: oidKeyUsage, Value: []byte{0x30, 0x00}}}}, code: policy.CodeBadCSR, names: "keyUsage"},
		{name: "other identity", tmpl: x509.CertificateRequest{URIs: []*url.URL{mustURL("spiffe://example.org/ns/prod/db")}}, code: policy.CodeIdentityMismatch, names: "spiffe://example.org/ns/prod/db"},
		{name: "granted and other identity", tmpl: x509.CertificateRequest{URIs: []*url.URL{webID.URL(), mustURL("spiffe://example.org/admin/root")}}, code: policy.CodeIdentityMismatch, names: "/admin/root"},
		{name: "foreign identity", tmpl: x509.CertificateRequest{URIs: []*url.URL{mustURL("spiffe://evil.example/ns/prod/web")}}, code: policy.CodeForeignTrustDomain, names: "evil.example"},
		{name: "non-SPIFFE URI", tmpl: x509.CertificateRequest{URIs: []*url.URL{mustURL("https://web.example.org/")}}, code: policy.CodeIdentityMismatch, names: "https://web.example.org/"},
		{name: "DNS name not granted", tmpl: x509.CertificateRequest{DNSNames: []string{"web.example.org", "db.example.org"}}, code: policy.CodeNameNotGranted, names: "db.example.org"},
		{name: "wildcard not granted", tmpl: x509.CertificateRequest{DNSNames: []string{"*.example.org"}}, code: policy.CodeNameNotGranted, names: "*.example.org"},
		{name: "IP not granted", tmpl: x509.CertificateRequest{IPAddresses: []net.IP{net.ParseIP("10.0.0.2")}}, code: policy.CodeNameNotGranted, names: "10.0.0.2"},
		{name: "e-mail", tmpl: x509.CertificateRequest{EmailAddresses: []string{"web@example.org"}}, code: policy.CodeNameNotGranted, names: "e-mail"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr := makeCSR(t, tt.key, tt.tmpl)
			err := p.CheckCSR(csr, webGrant())
			if tt.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			re := wantRefused(t, err, tt.code)
			if !strings.Contains(re.Reason, tt.names) {
				t.Errorf("reason %q does not name %q", re.Reason, tt.names)
			}
		})
	}
}

func TestCheckCSRGrantWithoutNames(t *testing.T) {
	p := testPolicy()
	csr := makeCSR(t, "", x509.CertificateRequest{DNSNames: []string{"web.example.org"}})
	err := p.CheckCSR(csr, policy.Grant{ID: webID})
	re := wantRefused(t, err, policy.CodeNameNotGranted)
	if !strings.Contains(re.Reason, "granted: none") {
		t.Errorf("reason %q does not say that nothing was granted", re.Reason)
	}
	csr = makeCSR(t, "", x509.CertificateRequest{IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}})
	wantRefused(t, p.CheckCSR(csr, policy.Grant{ID: webID}), policy.CodeNameNotGranted)
}

func TestCheckCSRIPv4InIPv6(t *testing.T) {
	// 10.0.0.1 may arrive as a 16-byte address; it is still the granted one.
	csr := makeCSR(t, "", x509.CertificateRequest{IPAddresses: []net.IP{net.ParseIP("::ffff:10.0.0.1")}})
	if err := testPolicy().CheckCSR(csr, webGrant()); err != nil {
		t.Fatal(err)
	}
}

func TestCheckCSRBadSignature(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"web.example.org"}}, k)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	// Swap in another key: the signature no longer verifies.
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr.PublicKey = other.Public()
	wantRefused(t, testPolicy().CheckCSR(csr, webGrant()), policy.CodeCSRSignature)

	// Flip a bit of the signed content in the DER itself.
	tampered := append([]byte(nil), der...)
	i := strings.Index(string(tampered), "web.example.org")
	tampered[i] = 'W'
	csr, err = x509.ParseCertificateRequest(tampered)
	if err != nil {
		t.Fatal(err)
	}
	wantRefused(t, testPolicy().CheckCSR(csr, webGrant()), policy.CodeCSRSignature)
}

// FuzzCheckCSR feeds parsed certificate requests to CheckCSR: it must never
// panic, and must either accept or refuse with a *policy.RefusedError.
func FuzzCheckCSR(f *testing.F) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	for _, tmpl := range []x509.CertificateRequest{
		{},
		{URIs: []*url.URL{webID.URL()}, DNSNames: []string{"web.example.org"}, IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}},
		{DNSNames: []string{"db.example.org"}, EmailAddresses: []string{"x@example.org"}},
	} {
		der, err := x509.CreateCertificateRequest(rand.Reader, &tmpl, k)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der)
		f.Add(pki.EncodeCSR(der))
	}
	p := testPolicy()
	f.Fuzz(func(t *testing.T, data []byte) {
		csr, err := pki.ParseCSR(data)
		if err != nil {
			return
		}
		err = p.CheckCSR(csr, webGrant())
		if err == nil {
			return
		}
		var re *policy.RefusedError
		if !errors.As(err, &re) {
			t.Fatalf("CheckCSR returned %v (%T), want nil or a *policy.RefusedError", err, err)
		}
		if re.Code == "" || re.Reason == "" {
			t.Fatalf("refusal without a code or reason: %+v", re)
		}
	})
}

// TestReservedIdentitiesCannotBeGranted: the CA's own ID (which clients
// accept as the CA) and operators cannot come out of a token or an entry,
// nodes not out of an entry; neither at token creation nor at issuance (a
// grant stored before the rule existed is refused when it is used).
func TestReservedIdentitiesCannotBeGranted(t *testing.T) {
	p := testPolicy()
	csr := makeCSR(t, "", x509.CertificateRequest{})
	tests := []struct {
		id      string
		allowed []policy.Via
	}{
		{"spiffe://example.org/mutual/server", nil},
		{"spiffe://example.org/mutual/other", nil},
		{"spiffe://example.org/admin/mallory", []policy.Via{policy.ViaRenewal}},
		{"spiffe://example.org/admin", nil},
		{"spiffe://example.org/node/web-1", []policy.Via{policy.ViaToken, policy.ViaRenewal}},
		{"spiffe://example.org/ns/admin/x", []policy.Via{policy.ViaEntry, policy.ViaToken, policy.ViaRenewal}},
		{"spiffe://example.org/ns/prod/web", []policy.Via{policy.ViaEntry, policy.ViaToken, policy.ViaRenewal}},
	}
	for _, tt := range tests {
		id := spiffeid.RequireFromString(tt.id)
		for _, via := range []policy.Via{policy.ViaEntry, policy.ViaToken, policy.ViaRenewal} {
			want := false
			for _, a := range tt.allowed {
				want = want || a == via
			}
			err := p.CheckGrantable(id, via)
			issueErr := p.CheckCSR(csr, policy.Grant{ID: id, Via: via})
			if want {
				if err != nil || issueErr != nil {
					t.Errorf("%s through %s refused: %v / %v", id, via, err, issueErr)
				}
				continue
			}
			wantRefused(t, err, policy.CodeReservedIdentity)
			wantRefused(t, issueErr, policy.CodeReservedIdentity)
			if via == policy.ViaToken {
				wantRefused(t, p.CheckTokenGrant(policy.Grant{ID: id}, time.Hour), policy.CodeReservedIdentity)
			}
		}
	}
}
