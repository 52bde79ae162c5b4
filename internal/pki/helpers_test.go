package pki_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/pki"
)

const testPassphrase = "correct horse battery staple"

// testIterations keeps PBKDF2 cheap in tests.
const testIterations = 1000

var exampleTD = spiffeid.RequireTrustDomainFromString("example.org")

var (
	keysMu sync.Mutex
	keys   = map[pki.KeyType]crypto.Signer{}
)

// Key types mutual does not make but accepts in a leaf's CSR or an HSM's
// issuing key: the leaf encoder must be crypto/x509's for them too.
const (
	keyECDSAP521 pki.KeyType = "ecdsa-p521"
	keyRSA2048   pki.KeyType = "rsa-2048"
	keyRSA4096   pki.KeyType = "rsa-4096"
)

// testKey returns a key of type kt (one of pki.KeyTypes or the key types
// above), made once per test binary: RSA keys are slow to generate.
func testKey(t testing.TB, kt pki.KeyType) crypto.Signer {
	t.Helper()
	keysMu.Lock()
	defer keysMu.Unlock()
	if k, ok := keys[kt]; ok {
		return k
	}
	var k crypto.Signer
	var err error
	switch kt {
	case keyECDSAP521:
		k, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case keyRSA2048:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case keyRSA4096:
		k, err = rsa.GenerateKey(rand.Reader, 4096)
	default:
		k, err = pki.GenerateKey(kt, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	keys[kt] = k
	return k
}

// testCA is a CA made by pki.Init at a known time.
type testCA struct {
	dir string
	now time.Time
	res *pki.InitResult
}

// initCA makes a CA of key type kt in a fresh directory, at the current time
// cut to the second (certificates hold whole seconds).
func initCA(t testing.TB, kt pki.KeyType, opts ...func(*pki.InitOptions)) *testCA {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Second)
	o := pki.InitOptions{
		Dir:         filepath.Join(t.TempDir(), "ca"),
		TrustDomain: exampleTD,
		Passphrase:  []byte(testPassphrase),
		KeyType:     kt,
		Iterations:  testIterations,
		Now:         func() time.Time { return now },
	}
	for _, f := range opts {
		f(&o)
	}
	res, err := pki.Init(o)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{dir: o.Dir, now: now, res: res}
}

func (ca *testCA) path(name string) string { return filepath.Join(ca.dir, filepath.FromSlash(name)) }

func readCerts(t testing.TB, path string) []*x509.Certificate {
	t.Helper()
	certs, err := pki.ReadCertificates(path)
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

func readKey(t testing.TB, path string, passphrase []byte) crypto.Signer {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k, err := pki.ParsePrivateKey(data, passphrase)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return k
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// openssl returns the path of the openssl command. Without it the test is
// skipped, or fails when the CI environment variable is set.
func openssl(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("openssl is needed for the interoperability tests: %v", err)
		}
		t.Skipf("openssl not found (%v); install it to run the interoperability tests", err)
	}
	return p
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
