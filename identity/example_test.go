package identity_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
)

// exampleCA makes a CA, as `mutual ca init` does, in a temporary directory
// and returns that directory.
func exampleCA() string {
	dir, err := os.MkdirTemp("", "mutual-example-")
	if err != nil {
		log.Fatal(err)
	}
	_, err = pki.Init(pki.InitOptions{
		Dir:         filepath.Join(dir, "ca"),
		TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		Passphrase:  []byte("example passphrase"),
		Iterations:  1000, // cheap for the example; the default is pki.PBKDF2Iterations
	})
	if err != nil {
		log.Fatal(err)
	}
	return dir
}

func ExampleLoad() {
	dir := exampleCA()
	defer os.RemoveAll(dir)

	// `mutual ca init` writes the operator's identity into DIR/admin.
	id, err := identity.Load(filepath.Join(dir, "ca", "admin"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(id.ID)
	fmt.Println("chain:", len(id.Chain), "certificates")
	fmt.Println("roots:", id.Roots[0].Subject.CommonName)
	// Output:
	// spiffe://example.org/admin/operator
	// chain: 2 certificates
	// roots: example.org root CA
}

func ExampleIdentity_Save() {
	dir := exampleCA()
	defer os.RemoveAll(dir)
	id, err := identity.Load(filepath.Join(dir, "ca", "admin"))
	if err != nil {
		log.Fatal(err)
	}

	// Save writes cert.pem, key.pem (mode 0600) and bundle.pem.
	copyDir := filepath.Join(dir, "copy")
	if err := id.Save(copyDir); err != nil {
		log.Fatal(err)
	}
	again, err := identity.Load(copyDir)
	if err != nil {
		log.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(copyDir, identity.KeyFile))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(again.ID)
	fmt.Println(identity.KeyFile, st.Mode().Perm())
	// Output:
	// spiffe://example.org/admin/operator
	// key.pem -rw-------
}

func ExampleIdentity_TLSCertificate() {
	dir := exampleCA()
	defer os.RemoveAll(dir)
	id, err := identity.Load(filepath.Join(dir, "ca", "admin"))
	if err != nil {
		log.Fatal(err)
	}

	// A client configuration for mutual TLS with the CA service.
	config := &tls.Config{
		Certificates: []tls.Certificate{id.TLSCertificate()},
		RootCAs:      id.RootPool(),
		MinVersion:   tls.VersionTLS13,
	}

	// The chain it presents verifies against the identity's own roots.
	leaf := config.Certificates[0].Leaf
	inters := x509.NewCertPool()
	for _, c := range id.Chain[1:] {
		inters.AddCert(c)
	}
	_, err = leaf.Verify(x509.VerifyOptions{
		Roots: config.RootCAs, Intermediates: inters,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	fmt.Println(leaf.URIs[0], "verifies:", err == nil)
	// Output:
	// spiffe://example.org/admin/operator verifies: true
}
