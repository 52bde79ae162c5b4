package audit_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/audit"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testnet"
)

const (
	proxyID = "spiffe://example.org/ns/prod/api"
	webID   = "spiffe://example.org/ns/prod/web"
)

// offlineCA is a CA made by the real pki.Init whose root key has been
// taken off the host, as the operator is told to do; rootKey is that key,
// decrypted, for tests that need to issue from the root.
type offlineCA struct {
	*testca.CA
	rootKey crypto.Signer
}

func newOfflineCA(t testing.TB, opts ...testca.Option) *offlineCA {
	t.Helper()
	c := testca.New(t, opts...)
	k := c.Key(t, pki.RootKeyFile)
	if err := os.Remove(filepath.Join(c.Dir, pki.RootKeyFile)); err != nil {
		t.Fatal(err)
	}
	return &offlineCA{CA: c, rootKey: k}
}

// editConfig changes the CA's ca.json.
func editConfig(t testing.TB, dir string, edit func(*pki.Config)) {
	t.Helper()
	p := filepath.Join(dir, pki.ConfigFile)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var cfg pki.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	edit(&cfg)
	if b, err = json.MarshalIndent(cfg, "", "  "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeTemp writes data to a new file in a temporary directory.
func writeTemp(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

var serial int64 = 1000

// selfSigned makes a CA certificate for key, valid from notBefore to
// notAfter, signed with alg (0 means the default for the key).
func selfSigned(t testing.TB, cn string, key crypto.Signer, notBefore, notAfter time.Time, alg x509.SignatureAlgorithm) *x509.Certificate {
	t.Helper()
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn, Organization: []string{"test"}},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true, SignatureAlgorithm: alg,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ecKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// proxyRun is a real mutual inbound proxy on 127.0.0.1.
type proxyRun struct {
	addr string
	mig  *proxy.MigrationReport
	// metrics is the base URL of a metrics listener that serves
	// /migration, as `mutual proxy inbound --metrics` does.
	metrics string
}

// proxyIdentity is an identity of c for a proxy on 127.0.0.1.
func proxyIdentity(t testing.TB, c *testca.CA) *identity.Identity {
	return c.Leaf(t, proxyID, testca.IP("127.0.0.1"), testca.DNS("localhost"))
}

// runProxy runs an inbound proxy presenting id in front of an echo
// service, allowing webID.
func runProxy(t testing.TB, id *identity.Identity, cfg proxy.InboundConfig) *proxyRun {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "proxy")
	if err := id.Save(dir); err != nil {
		t.Fatal(err)
	}
	src, err := identity.NewDirSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := authz.FromPatterns([]string{webID})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Target == "" {
		cfg.Target = testnet.Echo(t)
	}
	cfg.SVID, cfg.Bundle, cfg.Policy = src, src, proxy.StaticPolicy{P: pol}
	cfg.Migration = proxy.NewMigrationReport()
	cfg.Limits.DrainTimeout = time.Second
	p, err := proxy.NewInbound(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := testnet.Run(t, p.Serve)
	mux := http.NewServeMux()
	mux.Handle("/migration", cfg.Migration)
	ms := httptest.NewServer(mux)
	t.Cleanup(ms.Close)
	return &proxyRun{addr: srv.Addr, mig: cfg.Migration, metrics: ms.URL}
}

// summary is the report's findings as sorted, distinct "id:severity".
func summary(r *audit.Report) []string {
	seen := map[string]bool{}
	var out []string
	for _, f := range r.Findings {
		k := f.ID + ":" + f.Severity.String()
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func describe(r *audit.Report) string {
	var b strings.Builder
	for _, f := range r.Findings {
		b.WriteString("  " + f.Severity.String() + " " + f.ID + ": " + f.Title + "\n    evidence: " + f.Evidence + "\n    fix: " + f.Fix + "\n")
	}
	b.WriteString("  checked: " + strings.Join(r.Checked, "; ") + "\n")
	return b.String()
}
