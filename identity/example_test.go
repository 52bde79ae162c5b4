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
	"github.com/mutual-tls/mutual/identity/identitytest"
)

// exampleDir writes an identity for id into a temporary directory, as
// `mutual cert request` does, and returns the directory.
func exampleDir(id string) string {
	ca, err := identitytest.NewCA("example.org")
	if err != nil {
		log.Fatal(err)
	}
	idn, err := ca.Issue(id)
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "mutual-example-")
	if err != nil {
		log.Fatal(err)
	}
	if err := identity.WriteDir(filepath.Join(dir, "web"), idn, identity.WriteOptions{CAURLs: []string{"https://ca.example.org:8443"}}); err != nil {
		log.Fatal(err)
	}
	return dir
}

func ExampleLoad() {
	dir := exampleDir("spiffe://example.org/ns/prod/web")
	defer os.RemoveAll(dir)

	id, err := identity.Load(filepath.Join(dir, "web"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(id.ID)
	fmt.Println("chain:", len(id.Chain), "certificates")
	fmt.Println("roots:", id.Roots[0].Subject.CommonName)
	// Output:
	// spiffe://example.org/ns/prod/web
	// chain: 2 certificates
	// roots: example.org test root CA
}

// WriteDir writes cert.pem, key.pem (mode 0600), bundle.pem and the CA's
// addresses as one set: a reader sees the old files or the new, never a mix.
func ExampleWriteDir() {
	ca, err := identitytest.NewCA("example.org")
	if err != nil {
		log.Fatal(err)
	}
	id, err := ca.Issue("spiffe://example.org/ns/prod/web")
	if err != nil {
		log.Fatal(err)
	}
	dir, _ := os.MkdirTemp("", "mutual-example-")
	defer os.RemoveAll(dir)

	web := filepath.Join(dir, "web")
	if err := identity.WriteDir(web, id, identity.WriteOptions{CAURLs: []string{"https://ca.example.org:8443"}}); err != nil {
		log.Fatal(err)
	}
	again, err := identity.Load(web)
	if err != nil {
		log.Fatal(err)
	}
	urls, err := identity.ReadCAURLs(web)
	if err != nil {
		log.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(web, identity.KeyFile))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(again.ID)
	fmt.Println(identity.KeyFile, st.Mode().Perm())
	fmt.Println("renews at", urls[0])
	// Output:
	// spiffe://example.org/ns/prod/web
	// key.pem -rw-------
	// renews at https://ca.example.org:8443
}

func ExampleIdentity_TLSCertificate() {
	dir := exampleDir("spiffe://example.org/ns/prod/web")
	defer os.RemoveAll(dir)
	id, err := identity.Load(filepath.Join(dir, "web"))
	if err != nil {
		log.Fatal(err)
	}

	// A client configuration presenting the identity and trusting its roots.
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
	// spiffe://example.org/ns/prod/web verifies: true
}

// A DirSource follows a directory as it is rewritten; Reload picks up a new
// set (Run calls it on a timer).
func ExampleDirSource() {
	ca, err := identitytest.NewCA("example.org")
	if err != nil {
		log.Fatal(err)
	}
	dir, _ := os.MkdirTemp("", "mutual-example-")
	defer os.RemoveAll(dir)
	first, _ := ca.Issue("spiffe://example.org/ns/prod/web")
	if err := first.Save(dir); err != nil {
		log.Fatal(err)
	}
	src, err := identity.NewDirSource(dir)
	if err != nil {
		log.Fatal(err)
	}
	renewed, _ := ca.Issue("spiffe://example.org/ns/prod/web")
	if err := renewed.Save(dir); err != nil {
		log.Fatal(err)
	}
	changed, err := src.Reload()
	if err != nil {
		log.Fatal(err)
	}
	svid, _ := src.GetX509SVID()
	fmt.Println("changed:", changed)
	fmt.Println("serves the renewed certificate:", svid.Certificates[0].Equal(renewed.Leaf()))
	// Output:
	// changed: true
	// serves the renewed certificate: true
}

// A directory can hold the roots of federated trust domains beside its own
// (federated/TD.pem); Bundles keeps each domain's roots for that domain's
// peers only, as tlsconfig and go-spiffe look them up.
func ExampleIdentity_Bundles() {
	local, err := identitytest.NewCA("example.org")
	if err != nil {
		log.Fatal(err)
	}
	partner, err := identitytest.NewCA("partner.example")
	if err != nil {
		log.Fatal(err)
	}
	id, err := local.Issue("spiffe://example.org/ns/prod/web")
	if err != nil {
		log.Fatal(err)
	}
	id.Federated = map[spiffeid.TrustDomain][]*x509.Certificate{partner.TrustDomain: {partner.Root}}
	dir, err := os.MkdirTemp("", "mutual-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := identity.WriteDir(dir, id, identity.WriteOptions{}); err != nil {
		log.Fatal(err)
	}

	loaded, err := identity.Load(dir)
	if err != nil {
		log.Fatal(err)
	}
	for _, b := range loaded.Bundles().Bundles() {
		fmt.Println(b.TrustDomain(), b.X509Authorities()[0].Subject.CommonName)
	}
	// Output:
	// example.org example.org test root CA
	// partner.example partner.example test root CA
}
