package testenv_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/testenv"
)

// TestStartCAServesAndRestarts: the admin client works, an enrolled
// identity chains to the CA's root, and after Stop and Start the service
// answers again at the same URL from the same store.
func TestStartCAServesAndRestarts(t *testing.T) {
	ca := testenv.StartCA(t, testenv.Options{HTTP: true})
	web := ca.Enroll(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{})
	if !web.Roots[0].Equal(ca.Root) {
		t.Fatal("the enrolled identity does not trust the CA's root")
	}
	resp, err := http.Get(ca.HTTPURL + "/ocsp")
	if err != nil {
		t.Fatalf("plain-HTTP listener: %v", err)
	}
	resp.Body.Close()
	url := ca.URL
	ca.Stop(t)
	if _, err := ca.Admin.ListCertificates(context.Background(), web.ID.String(), false); err == nil {
		t.Fatal("the stopped service still answered")
	}
	ca.Start(t)
	if ca.URL != url {
		t.Fatalf("URL after restart %s, want %s", ca.URL, url)
	}
	list, err := ca.Admin.ListCertificates(context.Background(), web.ID.String(), false)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if len(list.Certificates) == 0 {
		t.Fatalf("after restart the store lost %s", web.ID)
	}
}
