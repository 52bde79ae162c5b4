package pki_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"io"
	"math/big"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/pki"
)

// newIssuer makes a CA and returns its loaded issuer.
func newIssuer(t testing.TB) (*testCA, *pki.Issuer) {
	t.Helper()
	ca := initCA(t, pki.KeyECDSAP256)
	loaded, err := pki.LoadCA(ca.dir, []byte(testPassphrase))
	if err != nil {
		t.Fatal(err)
	}
	return ca, loaded.Issuer
}

func verifyLeaf(ca *testCA, leaf *x509.Certificate, at time.Time, usage x509.ExtKeyUsage) error {
	_, err := pki.VerifyChain([]*x509.Certificate{leaf, ca.res.Intermediate}, []*x509.Certificate{ca.res.Root}, at, usage)
	return err
}

func TestIssue(t *testing.T) {
	ca, is := newIssuer(t)
	key := testKey(t, pki.KeyEd25519)
	id := spiffeid.RequireFromString("spiffe://example.org/ns/prod/web")
	now := ca.now.Add(time.Hour)
	leaf, err := is.Issue(pki.Leaf{
		ID: id, PublicKey: key.Public(), TTL: 2 * time.Hour, Now: now,
		DNSNames:    []string{"web.example.org", "web"},
		IPAddresses: []net.IP{net.ParseIP("10.0.0.1")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.CheckSignatureFrom(ca.res.Intermediate); err != nil {
		t.Errorf("leaf not signed by the intermediate: %v", err)
	}
	if !pki.PublicKeysEqual(leaf.PublicKey, key.Public()) {
		t.Error("leaf certifies another key")
	}
	if s := leaf.SerialNumber; s.Sign() <= 0 || s.BitLen() > 128 {
		t.Errorf("serial %x is not a positive 128-bit number", s)
	}
	checkValidity(t, "leaf", leaf, now, 2*time.Hour)
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage = %b, want digitalSignature only", leaf.KeyUsage)
	}
	if want := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}; !slices.Equal(leaf.ExtKeyUsage, want) || len(leaf.UnknownExtKeyUsage) != 0 {
		t.Errorf("ExtKeyUsage = %v (unknown %v), want serverAuth and clientAuth", leaf.ExtKeyUsage, leaf.UnknownExtKeyUsage)
	}
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Errorf("IsCA %v, BasicConstraintsValid %v; want a leaf that says it is not a CA", leaf.IsCA, leaf.BasicConstraintsValid)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		t.Errorf("URIs = %v, want exactly %s", leaf.URIs, id)
	}
	if !slices.Equal(leaf.DNSNames, []string{"web.example.org", "web"}) || len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("10.0.0.1")) {
		t.Errorf("names DNS %q, IP %v", leaf.DNSNames, leaf.IPAddresses)
	}
	if leaf.Subject.CommonName != "web.example.org" || !slices.Equal(leaf.Subject.Organization, []string{"example.org"}) {
		t.Errorf("Subject = %v, want CN the first DNS name, O the trust domain", leaf.Subject)
	}
	if len(leaf.EmailAddresses) != 0 || len(leaf.PermittedURIDomains) != 0 {
		t.Error("leaf carries names or constraints nobody asked for")
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if err := verifyLeaf(ca, leaf, now, usage); err != nil {
			t.Errorf("leaf does not verify for %v: %v", usage, err)
		}
	}
	// Back-dating lets a peer whose clock is a little behind accept it at once.
	if err := verifyLeaf(ca, leaf, now.Add(-59*time.Second), x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("leaf is not valid 59s before its issue: %v", err)
	}
	var inv x509.CertificateInvalidError
	if err := verifyLeaf(ca, leaf, now.Add(2*time.Hour+time.Second), x509.ExtKeyUsageClientAuth); !errors.As(err, &inv) || inv.Reason != x509.Expired {
		t.Errorf("leaf after its lifetime: %v, want Expired", err)
	}
}

func TestIssueWithoutNames(t *testing.T) {
	ca, is := newIssuer(t)
	leaf, err := is.Issue(pki.Leaf{ID: spiffeid.RequireFromString("spiffe://example.org/batch"), PublicKey: testKey(t, pki.KeyECDSAP256).Public(), TTL: time.Hour, Now: ca.now})
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != "" || len(leaf.DNSNames) != 0 || len(leaf.IPAddresses) != 0 {
		t.Errorf("leaf without names has CN %q, DNS %q, IP %v", leaf.Subject.CommonName, leaf.DNSNames, leaf.IPAddresses)
	}
	if err := verifyLeaf(ca, leaf, ca.now, x509.ExtKeyUsageClientAuth); err != nil {
		t.Error(err)
	}
}

func TestIssueSerials(t *testing.T) {
	ca, is := newIssuer(t)
	pub := testKey(t, pki.KeyECDSAP256).Public()
	id := spiffeid.RequireFromString("spiffe://example.org/web")
	seen := map[string]bool{}
	longest := 0
	const n = 16
	for range n {
		c, err := is.Issue(pki.Leaf{ID: id, PublicKey: pub, TTL: time.Hour, Now: ca.now})
		if err != nil {
			t.Fatal(err)
		}
		s := c.SerialNumber
		if s.Sign() <= 0 || s.BitLen() > 128 {
			t.Errorf("serial %x is not a positive 128-bit number", s)
		}
		seen[s.String()] = true
		longest = max(longest, s.BitLen())
	}
	if len(seen) != n {
		t.Errorf("%d certificates share %d serials", n, len(seen))
	}
	// The chance that 16 random 128-bit serials all fit in 120 bits is 2^-128.
	if longest <= 120 {
		t.Errorf("the longest of %d serials has %d bits: they are not 128 random bits", n, longest)
	}
}

// constReader returns b forever.
type constReader byte

func (c constReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(c)
	}
	return len(p), nil
}

func TestNewSerial(t *testing.T) {
	allOnes := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 128), big.NewInt(1))
	tests := []struct {
		name string
		r    io.Reader
		want *big.Int
	}{
		{"128 bits", constReader(0xff), allOnes},
		{"zero is skipped", io.MultiReader(bytes.NewReader(make([]byte, 16)), constReader(0x01)), new(big.Int).SetBytes(bytes.Repeat([]byte{1}, 16))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pki.NewSerial(tt.r)
			if err != nil {
				t.Fatal(err)
			}
			if got.Cmp(tt.want) != 0 {
				t.Errorf("NewSerial = %x, want %x", got, tt.want)
			}
		})
	}
	t.Run("short randomness", func(t *testing.T) {
		if _, err := pki.NewSerial(bytes.NewReader(make([]byte, 15))); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("err = %v, want io.ErrUnexpectedEOF", err)
		}
	})
	t.Run("crypto/rand", func(t *testing.T) {
		a, err := pki.NewSerial(nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := pki.NewSerial(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if a.Cmp(b) == 0 {
			t.Error("two random serials are equal")
		}
	})
}

func TestIssueInjectedRand(t *testing.T) {
	ca, is := newIssuer(t)
	is.Rand = constReader(0xff)
	c, err := is.Issue(pki.Leaf{ID: spiffeid.RequireFromString("spiffe://example.org/web"), PublicKey: testKey(t, pki.KeyECDSAP256).Public(), TTL: time.Hour, Now: ca.now})
	if err != nil {
		t.Fatal(err)
	}
	if c.SerialNumber.BitLen() != 128 || c.SerialNumber.Cmp(new(big.Int).SetBytes(bytes.Repeat([]byte{0xff}, 16))) != 0 {
		t.Errorf("serial %x, want 16 bytes of ff from the injected source", c.SerialNumber)
	}
}

func TestIssueNow(t *testing.T) {
	_, is := newIssuer(t)
	before := time.Now().Truncate(time.Second)
	c, err := is.Issue(pki.Leaf{ID: spiffeid.RequireFromString("spiffe://example.org/web"), PublicKey: testKey(t, pki.KeyECDSAP256).Public(), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	if nb := c.NotBefore.Add(pki.ClockSkew); nb.Before(before) || nb.After(after) {
		t.Errorf("with no Now, NotBefore+1m = %v, want the time of issue (%v to %v)", nb, before, after)
	}
}

func TestIssueCutToIssuerLifetime(t *testing.T) {
	ca, is := newIssuer(t)
	end := ca.res.Intermediate.NotAfter
	c, err := is.Issue(pki.Leaf{ID: spiffeid.RequireFromString("spiffe://example.org/web"), PublicKey: testKey(t, pki.KeyECDSAP256).Public(), TTL: 24 * time.Hour, Now: end.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if !c.NotAfter.Equal(end) {
		t.Errorf("NotAfter = %v, want the intermediate's %v", c.NotAfter, end)
	}
}

func TestIssueRefuses(t *testing.T) {
	ca, is := newIssuer(t)
	pub := testKey(t, pki.KeyECDSAP256).Public()
	id := spiffeid.RequireFromString("spiffe://example.org/web")
	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		leaf pki.Leaf
		// names is a piece of the message that points at the fault.
		names string
	}{
		{"no identity", pki.Leaf{PublicKey: pub, TTL: time.Hour, Now: ca.now}, "SPIFFE ID"},
		{"zero lifetime", pki.Leaf{ID: id, PublicKey: pub, Now: ca.now}, "lifetime"},
		{"negative lifetime", pki.Leaf{ID: id, PublicKey: pub, TTL: -time.Hour, Now: ca.now}, "lifetime"},
		{"issuer expired", pki.Leaf{ID: id, PublicKey: pub, TTL: time.Hour, Now: ca.res.Intermediate.NotAfter}, "expired"},
		{"key that cannot sign", pki.Leaf{ID: id, PublicKey: x25519.PublicKey(), TTL: time.Hour, Now: ca.now}, id.String()},
		{"no key", pki.Leaf{ID: id, TTL: time.Hour, Now: ca.now}, id.String()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := is.Issue(tt.leaf)
			if err == nil {
				t.Fatalf("Issue made a certificate: %v", c.Subject)
			}
			if !strings.Contains(err.Error(), tt.names) {
				t.Errorf("error %q does not name %q", err, tt.names)
			}
		})
	}
}

// TestIssueTypedFields: what the CA adds to a leaf beyond its identity (where
// to check revocation, its own extensions) arrives in the certificate.
func TestIssueTypedFields(t *testing.T) {
	ca, is := newIssuer(t)
	ext := pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: []byte{0x05, 0x00}}
	c, err := is.Issue(pki.Leaf{
		ID: spiffeid.RequireFromString("spiffe://example.org/web"), PublicKey: testKey(t, pki.KeyECDSAP256).Public(), TTL: time.Hour, Now: ca.now,
		CRLDistributionPoints: []string{"https://ca.example.org/crl"}, OCSPServers: []string{"https://ca.example.org/ocsp"},
		Extensions: []pkix.Extension{ext},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.CRLDistributionPoints, []string{"https://ca.example.org/crl"}) {
		t.Errorf("CRLDistributionPoints = %q, want the Leaf's", c.CRLDistributionPoints)
	}
	if !slices.Equal(c.OCSPServer, []string{"https://ca.example.org/ocsp"}) {
		t.Errorf("OCSPServer = %q, want the Leaf's", c.OCSPServer)
	}
	if !slices.ContainsFunc(c.Extensions, func(e pkix.Extension) bool { return e.Id.Equal(ext.Id) && bytes.Equal(e.Value, ext.Value) }) {
		t.Errorf("extension %v missing from the certificate", ext.Id)
	}
}

// TestTemplateSign: a template changed between Template and Sign is signed
// as changed (how tests make defective leaves).
func TestTemplateSign(t *testing.T) {
	ca, is := newIssuer(t)
	key := testKey(t, pki.KeyECDSAP256)
	tmpl, err := is.Template(pki.Leaf{ID: spiffeid.RequireFromString("spiffe://example.org/web"), PublicKey: key.Public(), TTL: time.Hour, Now: ca.now})
	if err != nil {
		t.Fatal(err)
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	c, err := is.Sign(tmpl, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("ExtKeyUsage = %v, want serverAuth only", c.ExtKeyUsage)
	}
	if err := c.CheckSignatureFrom(ca.res.Intermediate); err != nil {
		t.Errorf("not signed by the issuer: %v", err)
	}
}

// TestNameConstraint: the intermediate cannot vouch for another trust
// domain, even if it signs such a certificate.
func TestNameConstraint(t *testing.T) {
	ca, is := newIssuer(t)
	c, err := is.Issue(pki.Leaf{ID: spiffeid.RequireFromString("spiffe://evil.example/web"), PublicKey: testKey(t, pki.KeyECDSAP256).Public(), TTL: time.Hour, Now: ca.now})
	if err != nil {
		t.Fatal(err)
	}
	var inv x509.CertificateInvalidError
	if err := verifyLeaf(ca, c, ca.now, x509.ExtKeyUsageClientAuth); !errors.As(err, &inv) || inv.Reason != x509.CANotAuthorizedForThisName {
		t.Errorf("leaf in another trust domain: %v, want CANotAuthorizedForThisName", err)
	}
}

// TestIssueDER: what IssueDER returns besides the DER (the template's
// serial and validity) is what the certificate says, even when Now has a
// fraction of a second, and the subject it marshals once per trust domain
// follows the trust domain of each leaf.
func TestIssueDER(t *testing.T) {
	ca, is := newIssuer(t)
	key := testKey(t, pki.KeyECDSAP256)
	now := ca.now.Add(time.Hour + 123456789*time.Nanosecond)
	for i, id := range []string{"spiffe://example.org/a", "spiffe://other.example/b", "spiffe://example.org/c"} {
		sid := spiffeid.RequireFromString(id)
		der, tmpl, err := is.IssueDER(pki.Leaf{ID: sid, PublicKey: key.Public(), TTL: time.Hour + 500*time.Millisecond, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if c.SerialNumber.Cmp(tmpl.SerialNumber) != 0 || !c.NotBefore.Equal(tmpl.NotBefore) || !c.NotAfter.Equal(tmpl.NotAfter) {
			t.Errorf("leaf %d: serial %x, %s to %s; template says %x, %s to %s", i, c.SerialNumber, c.NotBefore, c.NotAfter, tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter)
		}
		if tmpl.NotBefore.Location() != time.UTC || tmpl.NotAfter.Location() != time.UTC {
			t.Errorf("leaf %d: template times in %s and %s, want UTC as parsed", i, tmpl.NotBefore.Location(), tmpl.NotAfter.Location())
		}
		if want := (pkix.Name{Organization: []string{sid.TrustDomain().Name()}}).String(); c.Subject.String() != want {
			t.Errorf("leaf %d: subject %q, want %q", i, c.Subject, want)
		}
		if err := c.CheckSignatureFrom(ca.res.Intermediate); err != nil {
			t.Errorf("leaf %d: not signed by the issuer: %v", i, err)
		}
	}
}
