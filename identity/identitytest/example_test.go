package identitytest_test

import (
	"crypto/x509"
	"fmt"
	"log"

	"github.com/mutual-tls/mutual/identity/identitytest"
)

// A CA issues identities of its trust domain only; what it issues verifies
// against its root, for clients and servers alike.
func Example() {
	ca, err := identitytest.NewCA("example.org")
	if err != nil {
		log.Fatal(err)
	}
	web, err := ca.Issue("spiffe://example.org/ns/prod/web", "web.example.org")
	if err != nil {
		log.Fatal(err)
	}
	inter := x509.NewCertPool()
	inter.AddCert(web.Chain[1])
	_, err = web.Leaf().Verify(x509.VerifyOptions{Roots: web.RootPool(), Intermediates: inter, DNSName: "web.example.org",
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
	fmt.Println(web.ID, "verifies:", err == nil)

	_, err = ca.Issue("spiffe://other.org/ns/prod/web")
	fmt.Println(err)
	// Output:
	// spiffe://example.org/ns/prod/web verifies: true
	// identitytest: spiffe://other.org/ns/prod/web is not in trust domain example.org
}
