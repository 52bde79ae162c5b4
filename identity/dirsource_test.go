package identity_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
)

// TestDirSource: the source serves the directory's identity and bundle,
// follows a rewrite, and keeps serving the last good identity through a
// broken one.
func TestDirSource(t *testing.T) {
	ca := newCA(t)
	dir := filepath.Join(t.TempDir(), "web")
	first := issue(t, ca, "spiffe://example.org/ns/prod/web")
	if err := first.Save(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := identity.NewDirSource(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("NewDirSource of a missing directory: no error")
	}
	src, err := identity.NewDirSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	if src.Dir() != dir {
		t.Errorf("Dir() = %s, want %s", src.Dir(), dir)
	}
	b, err := src.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("example.org"))
	if err != nil || len(b.X509Authorities()) != 1 || !b.X509Authorities()[0].Equal(ca.Root) {
		t.Fatalf("bundle for example.org: %v, %v; want the CA's root", b, err)
	}
	if _, err := src.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("other.org")); err == nil || !strings.Contains(err.Error(), "other.org") {
		t.Errorf("bundle for other.org: %v, want an error naming it", err)
	}

	if changed, err := src.Reload(); changed || err != nil {
		t.Errorf("Reload of an unchanged directory = %v, %v; want false, nil", changed, err)
	}
	changedCh := src.Changed()
	next := issue(t, ca, "spiffe://example.org/ns/prod/web")
	if err := next.Save(dir); err != nil {
		t.Fatal(err)
	}
	if changed, err := src.Reload(); !changed || err != nil {
		t.Fatalf("Reload after a rewrite = %v, %v; want true, nil", changed, err)
	}
	select {
	case <-changedCh:
	default:
		t.Error("Changed() was not closed by the rewrite")
	}
	svid, err := src.GetX509SVID()
	if err != nil || !svid.Certificates[0].Equal(next.Leaf()) || svid.ID != next.ID {
		t.Fatalf("GetX509SVID after the rewrite: %v, want the new certificate", err)
	}

	// A key that does not belong: an error, the last good identity served.
	if err := os.WriteFile(filepath.Join(dir, identity.KeyFile), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Reload(); err == nil || !strings.Contains(err.Error(), identity.KeyFile) {
		t.Errorf("Reload of a broken directory: %v, want an error naming %s", err, identity.KeyFile)
	}
	if !src.Identity().Leaf().Equal(next.Leaf()) {
		t.Error("a broken rewrite replaced the identity served")
	}
}
