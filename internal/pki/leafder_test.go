package pki_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
)

// testIssuer is an issuer whose key is of type kt, its certificate
// self-signed with subject (nil: CN=<kt> issuer, O=example.org), valid
// until notAfter, with a subject key ID as every CA mutual makes.
func testIssuer(t testing.TB, kt pki.KeyType, subject *pkix.Name, notAfter time.Time) *pki.Issuer {
	t.Helper()
	key := testKey(t, kt)
	name := pkix.Name{CommonName: string(kt) + " issuer", Organization: []string{"example.org"}}
	if subject != nil {
		name = *subject
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: name, NotBefore: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &pki.Issuer{Cert: c, Key: key}
}

// checkLeafDER issues l with is and holds the result to crypto/x509's: the
// leaf encoder must have taken it (LeafTBS), its TBSCertificate must be
// the one x509.CreateCertificate writes for the same template, the
// certificate must parse and its signature verify with the issuer's key.
func checkLeafDER(t testing.TB, is *pki.Issuer, l pki.Leaf) {
	t.Helper()
	der, tmpl, err := is.IssueDER(l)
	if err != nil {
		t.Fatalf("IssueDER: %v", err)
	}
	got, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("the issued certificate does not parse: %v", err)
	}
	if err := got.CheckSignatureFrom(is.Cert); err != nil {
		t.Errorf("the issued certificate's signature does not verify: %v", err)
	}
	tbs, ok := pki.LeafTBS(is, tmpl, l.PublicKey)
	if !ok {
		t.Fatalf("the leaf encoder did not take %s (key %T, issuer key %T)", l.ID, l.PublicKey, is.Cert.PublicKey)
	}
	if !bytes.Equal(tbs, got.RawTBSCertificate) {
		t.Errorf("IssueDER's TBSCertificate is not the leaf encoder's")
	}
	// crypto/x509 from the same template, its subject marshalled by itself.
	goTmpl := *tmpl
	goTmpl.RawSubject = nil
	goDER, err := x509.CreateCertificate(rand.Reader, &goTmpl, is.Cert, l.PublicKey, is.Key)
	if err != nil {
		t.Fatalf("x509.CreateCertificate: %v", err)
	}
	want, err := x509.ParseCertificate(goDER)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.RawTBSCertificate, want.RawTBSCertificate) {
		t.Errorf("TBSCertificate differs from crypto/x509's:\n got %x\nwant %x", got.RawTBSCertificate, want.RawTBSCertificate)
	}
	if _, alg := certParts(t, der); !bytes.Equal(alg, func() []byte { _, a := certParts(t, goDER); return a }()) {
		t.Errorf("signatureAlgorithm %x differs from crypto/x509's", alg)
	}
}

// leafKeyTypes are the key types of leaf and issuer the leaf encoder is
// held to crypto/x509 over: mutual's own, and those a CSR or an HSM may
// bring (P-521, whose signature hash is SHA-512; RSA of other sizes).
var leafKeyTypes = append(slices.Clone(pki.KeyTypes), keyECDSAP521, keyRSA2048, keyRSA4096)

// TestLeafDER: every leaf mutual issues (workload, node, partner with
// roles; with and without DNS and IP names, revocation pointers), for
// every key type of leaf and of issuer, is crypto/x509's to the byte.
func TestLeafDER(t *testing.T) {
	roles, err := identity.RolesExtension([]string{"reader", "writer"})
	if err != nil {
		t.Fatal(err)
	}
	crl, ocsp := []string{"https://ca.example.org:8443/v1/crl"}, []string{"https://ca.example.org:8443/v1/ocsp"}
	leaves := []struct {
		name string
		leaf pki.Leaf
	}{
		{"workload", pki.Leaf{ID: spiffeid.RequireFromString("spiffe://example.org/ns/prod/web")}},
		{"workload served", pki.Leaf{ID: spiffeid.RequireFromString("spiffe://example.org/ns/prod/web"), CRLDistributionPoints: crl, OCSPServers: ocsp}},
		{"workload crl only", pki.Leaf{ID: spiffeid.RequireFromString("spiffe://example.org/web"), CRLDistributionPoints: crl}},
		{"workload DNS and IP", pki.Leaf{ID: spiffeid.RequireFromString("spiffe://example.org/web"),
			DNSNames: []string{"web.example.org", "web"}, IPAddresses: []net.IP{net.ParseIP("10.0.0.1"), net.ParseIP("2001:db8::1")},
			CRLDistributionPoints: crl, OCSPServers: ocsp}},
		{"workload IP only", pki.Leaf{ID: spiffeid.RequireFromString("spiffe://example.org/web"), IPAddresses: []net.IP{net.IPv4(192, 0, 2, 7).To4()}}},
		{"node", pki.Leaf{ID: spiffeid.RequireFromString("spiffe://example.org/node/n1"), CRLDistributionPoints: crl, OCSPServers: ocsp}},
		{"node DNS", pki.Leaf{ID: spiffeid.RequireFromString("spiffe://example.org/node/n1"), DNSNames: []string{"n1.example.org"}}},
		{"partner roles", pki.Leaf{ID: spiffeid.RequireFromString("spiffe://example.org/partner/acme/api"),
			Extensions: []pkix.Extension{roles}, CRLDistributionPoints: crl, OCSPServers: ocsp}},
		{"partner roles DNS", pki.Leaf{ID: spiffeid.RequireFromString("spiffe://example.org/partner/acme/api"),
			DNSNames: []string{"api.acme.example"}, Extensions: []pkix.Extension{roles}}},
		{"other trust domain", pki.Leaf{ID: spiffeid.RequireFromString("spiffe://other.example/a/b")}},
	}
	now := time.Now()
	issuers := map[string]*pki.Issuer{}
	for _, kt := range leafKeyTypes {
		issuers[string(kt)] = testIssuer(t, kt, nil, now.AddDate(1, 0, 0))
	}
	// An issuer whose subject is the leaf's: crypto/x509 writes no
	// authority key ID then.
	issuers["same subject"] = testIssuer(t, pki.KeyECDSAP256, &pkix.Name{Organization: []string{"example.org"}}, now.AddDate(1, 0, 0))
	ca, real := newIssuer(t)
	issuers["pki.Init"] = real
	for iname, is := range issuers {
		for _, kt := range leafKeyTypes {
			for _, c := range leaves {
				t.Run(fmt.Sprintf("%s/%s/%s", iname, kt, c.name), func(t *testing.T) {
					l := c.leaf
					l.PublicKey, l.TTL, l.Now = testKey(t, kt).Public(), time.Hour, ca.now.Add(time.Hour)
					checkLeafDER(t, is, l)
				})
			}
		}
	}
}

// TestLeafDERTimes: validity from 1950 to 2049 is UTCTime, after it
// GeneralizedTime, as crypto/x509 writes them.
func TestLeafDERTimes(t *testing.T) {
	is := testIssuer(t, pki.KeyECDSAP256, nil, time.Date(2070, 1, 1, 0, 0, 0, 0, time.UTC))
	for _, now := range []time.Time{
		time.Date(1951, 1, 1, 0, 30, 0, 0, time.UTC),
		time.Date(2049, 12, 31, 23, 30, 0, 999, time.FixedZone("east", 3600)),
		time.Date(2049, 12, 31, 23, 30, 0, 0, time.UTC),
		time.Date(2060, 6, 1, 12, 0, 0, 5e8, time.UTC),
	} {
		checkLeafDER(t, is, pki.Leaf{ID: spiffeid.RequireFromString("spiffe://example.org/web"), PublicKey: testKey(t, pki.KeyEd25519).Public(),
			TTL: time.Hour, Now: now})
	}
}

// TestLeafDERFallback: a leaf outside the encoder's shape (a name that is
// not an IA5 string) gets crypto/x509's own answer, its refusal.
func TestLeafDERFallback(t *testing.T) {
	_, is := newIssuer(t)
	l := pki.Leaf{ID: spiffeid.RequireFromString("spiffe://example.org/web"), PublicKey: testKey(t, pki.KeyECDSAP256).Public(),
		TTL: time.Hour, DNSNames: []string{"wéb.example.org"}}
	tmpl, err := is.Template(l)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := pki.LeafTBS(is, tmpl, l.PublicKey); ok {
		t.Error("the leaf encoder took a DNS name crypto/x509 refuses")
	}
	if _, _, err := is.IssueDER(l); err == nil || !strings.Contains(err.Error(), "IA5String") {
		t.Errorf("IssueDER(non-ASCII DNS name) = %v, want crypto/x509's IA5String refusal", err)
	}
}

// faultySigner signs with the right key and then spoils the signature, as
// a failing HSM might.
type faultySigner struct{ crypto.Signer }

func (f faultySigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := f.Signer.Sign(r, digest, opts)
	if err == nil {
		sig[len(sig)-1] ^= 1
	}
	return sig, err
}

// TestLeafDERFaultySigner: a signature that does not verify with the
// issuing certificate's key is the encoder's signature check's error,
// never a certificate.
func TestLeafDERFaultySigner(t *testing.T) {
	for _, kt := range leafKeyTypes {
		good := testIssuer(t, kt, nil, time.Now().AddDate(1, 0, 0))
		is := &pki.Issuer{Cert: good.Cert, Key: faultySigner{good.Key}}
		l := pki.Leaf{ID: spiffeid.RequireFromString("spiffe://example.org/web"), PublicKey: testKey(t, pki.KeyECDSAP256).Public(), TTL: time.Hour}
		tmpl, err := is.Template(l)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.RawSubject = []byte{0x30, 0} // any subject: only the encoder's taking the leaf matters here
		if _, ok := pki.LeafTBS(is, tmpl, l.PublicKey); !ok {
			t.Fatalf("%s: the leaf encoder does not take the leaf, so crypto/x509's check would be tested", kt)
		}
		der, _, err := is.IssueDER(l)
		if !errors.Is(err, pki.ErrSignatureCheck) || der != nil {
			t.Errorf("%s: IssueDER with a faulty signer = %d bytes, %v; want no certificate and the encoder's signature check's error", kt, len(der), err)
		}
	}
}

// FuzzLeafDER: whatever the names, times and keys, the leaf encoder writes
// crypto/x509's TBSCertificate, or leaves the leaf to crypto/x509. Its
// seeds (testdata/fuzz/FuzzLeafDER) are a workload, a node with DNS and
// IPv4 names, a partner with roles and IPv6 past 2050, a non-ASCII DNS
// name and a leaf before 1950.
func FuzzLeafDER(f *testing.F) {
	now := time.Unix(1767225600, 0)
	var issuers []*pki.Issuer
	for _, kt := range leafKeyTypes {
		issuers = append(issuers, testIssuer(f, kt, nil, now.AddDate(100, 0, 0)))
	}
	f.Fuzz(func(t *testing.T, path, dns string, ip []byte, unix int64, ttl uint32, keys uint8, roles string) {
		id, err := spiffeid.FromPath(spiffeid.RequireTrustDomainFromString("example.org"), "/"+path)
		if err != nil || ttl == 0 || unix < -1e11 || unix > 1e11 {
			return
		}
		l := pki.Leaf{ID: id, PublicKey: testKey(t, leafKeyTypes[int(keys)%len(leafKeyTypes)]).Public(),
			TTL: time.Duration(ttl) * time.Second, Now: time.Unix(unix, 0)}
		if dns != "" {
			l.DNSNames = strings.Split(dns, ",")
		}
		if len(ip) == net.IPv4len || len(ip) == net.IPv6len {
			l.IPAddresses = []net.IP{ip}
		}
		if roles != "" {
			ext, err := identity.RolesExtension(strings.Split(roles, ","))
			if err != nil {
				return
			}
			l.Extensions = []pkix.Extension{ext}
		}
		is := issuers[int(keys)/len(leafKeyTypes)%len(issuers)]
		der, tmpl, err := is.IssueDER(l)
		if err != nil {
			// Template's refusal (an expired issuer), or one crypto/x509
			// gives as well: never the encoder's alone.
			tmpl, tmplErr := is.Template(l)
			if tmplErr != nil {
				return
			}
			if _, goErr := x509.CreateCertificate(rand.Reader, tmpl, is.Cert, l.PublicKey, is.Key); goErr == nil {
				t.Fatalf("IssueDER refused (%v) what crypto/x509 signs", err)
			}
			return
		}
		goTmpl := *tmpl
		goTmpl.RawSubject = nil
		goDER, goErr := x509.CreateCertificate(rand.Reader, &goTmpl, is.Cert, l.PublicKey, is.Key)
		if goErr != nil {
			t.Fatalf("IssueDER signed what crypto/x509 refuses (%v)", goErr)
		}
		if !bytes.Equal(tbsOf(t, der), tbsOf(t, goDER)) {
			t.Fatalf("TBSCertificate differs from crypto/x509's:\n got %x\nwant %x", tbsOf(t, der), tbsOf(t, goDER))
		}
		if tbs, ok := pki.LeafTBS(is, tmpl, l.PublicKey); ok && !bytes.Equal(tbs, tbsOf(t, der)) {
			t.Fatal("the leaf encoder took the leaf but IssueDER's TBSCertificate is not its")
		}
	})
}

// tbsOf is the TBSCertificate of the Certificate der, read without
// crypto/x509's checks (which may refuse names both encoders wrote).
func tbsOf(t testing.TB, der []byte) []byte {
	tbs, _ := certParts(t, der)
	return tbs
}

// certParts are the Certificate der's TBSCertificate and signatureAlgorithm.
func certParts(t testing.TB, der []byte) (tbs, alg []byte) {
	t.Helper()
	var c struct {
		TBS asn1.RawValue
		Alg asn1.RawValue
		Sig asn1.BitString
	}
	if rest, err := asn1.Unmarshal(der, &c); err != nil || len(rest) > 0 {
		t.Fatalf("not a Certificate: %v", errors.Join(err, fmt.Errorf("%d bytes after it", len(rest))))
	}
	return c.TBS.FullBytes, c.Alg.FullBytes
}
