package identity_test

import (
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
)

var partnerTD = spiffeid.RequireTrustDomainFromString("partner.example")

// withPartner returns id with the partner CA's root as a federated bundle.
func withPartner(id *identity.Identity, roots ...*x509.Certificate) *identity.Identity {
	cp := *id
	cp.Federated = map[spiffeid.TrustDomain][]*x509.Certificate{partnerTD: roots}
	return &cp
}

// TestWriteDirFederated: the federated bundles are written as
// federated/TD.pem in the set, read back by Load, and go (federated/ with
// them) when a later set has none; the identity's own trust domain is never
// written as a federated one.
func TestWriteDirFederated(t *testing.T) {
	ca, partner := newCA(t), newCA(t)
	dir := filepath.Join(t.TempDir(), "web")
	id := withPartner(issue(t, ca, "spiffe://example.org/web"), partner.Root)
	id.Federated[ca.TrustDomain] = []*x509.Certificate{partner.Root} // must not be written
	if err := identity.WriteDir(dir, id, identity.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, identity.FederatedDir, "partner.example.pem")
	got, err := pki.ReadCertificates(path)
	if err != nil || len(got) != 1 || !got[0].Equal(partner.Root) {
		t.Fatalf("%s = %v, %v; want the partner's root", path, got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, identity.FederatedDir, "example.org.pem")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the own trust domain was written as a federated bundle: %v", err)
	}
	loaded, err := identity.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded.Federated) != 1 || len(loaded.Federated[partnerTD]) != 1 || !loaded.Federated[partnerTD][0].Equal(partner.Root) {
		t.Fatalf("Load: Federated = %v; want partner.example with its root", loaded.Federated)
	}

	if err := identity.WriteDir(dir, issue(t, ca, "spiffe://example.org/web"), identity.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, identity.FederatedDir)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("federated/ is still there after a set without federated bundles: %v", err)
	}
	loaded, err = identity.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Federated != nil {
		t.Errorf("Load: Federated = %v after the bundles were removed", loaded.Federated)
	}
}

// TestLoadFederatedRefusesOwnTrustDomain: a file under federated/ named for
// the identity's own trust domain would let another CA vouch for this
// domain's IDs; Load refuses it, as it refuses a name that is no trust
// domain. A directory without federated/ (written before it) loads.
func TestLoadFederatedRefusesOwnTrustDomain(t *testing.T) {
	ca, partner := newCA(t), newCA(t)
	for _, c := range []struct{ file, want string }{
		{"example.org.pem", "own trust domain"},
		{"Not A Domain.pem", "not named for a trust domain"},
	} {
		t.Run(c.file, func(t *testing.T) {
			// A directory written by another tool: plain files, no ..data.
			written, dir := t.TempDir(), t.TempDir()
			if err := issue(t, ca, "spiffe://example.org/web").Save(written); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{identity.CertFile, identity.KeyFile, identity.BundleFile} {
				b, err := os.ReadFile(filepath.Join(written, name))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if id, err := identity.Load(dir); err != nil || id.Federated != nil {
				t.Fatalf("a directory without federated/: Load = %v, %v", id, err)
			}
			fdir := filepath.Join(dir, identity.FederatedDir)
			if err := os.Mkdir(fdir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(fdir, c.file), pki.EncodeCertificates(partner.Root), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := identity.Load(dir)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Load with federated/%s = %v; want an error saying %q", c.file, err, c.want)
			}
		})
	}
}

// TestDirSourceFederatedBundles: a DirSource serves each trust domain's
// bundle for that trust domain only, picks up a federated bundle added or
// removed by a rewrite, and names what it holds when asked for another.
func TestDirSourceFederatedBundles(t *testing.T) {
	ca, partner := newCA(t), newCA(t)
	dir := t.TempDir()
	id := issue(t, ca, "spiffe://example.org/web")
	if err := identity.WriteDir(dir, withPartner(id, partner.Root), identity.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	src, err := identity.NewDirSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := src.GetX509BundleForTrustDomain(partnerTD)
	if err != nil || !b.HasX509Authority(partner.Root) || b.HasX509Authority(ca.Root) {
		t.Fatalf("partner.example bundle = %v, %v; want the partner's root only", b, err)
	}
	own, err := src.GetX509BundleForTrustDomain(ca.TrustDomain)
	if err != nil || !own.HasX509Authority(ca.Root) || own.HasX509Authority(partner.Root) {
		t.Fatalf("example.org bundle = %v, %v; want the local root only", own, err)
	}

	if err := identity.WriteDir(dir, id, identity.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if changed, err := src.Reload(); err != nil || !changed {
		t.Fatalf("Reload after the bundle was removed = %v, %v; want a change", changed, err)
	}
	_, err = src.GetX509BundleForTrustDomain(partnerTD)
	if err == nil || !strings.Contains(err.Error(), "federated/partner.example.pem") {
		t.Fatalf("partner.example bundle after removal: %v; want an error naming the file it would come from", err)
	}
}

// TestWriteDirFederatedUmask: the set's directories are 0755 whatever the
// writer's umask, so that the owner of files written for another user can
// reach them (federated/ included).
func TestWriteDirFederatedUmask(t *testing.T) {
	ca, partner := newCA(t), newCA(t)
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "web")
	if err := identity.WriteDir(dir, withPartner(issue(t, ca, "spiffe://example.org/web"), partner.Root), identity.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(dir, "..data"), filepath.Join(dir, identity.FederatedDir)} {
		if m := mode(t, d); m != 0o755 {
			t.Errorf("%s: mode %#o, want 0755", d, m)
		}
	}
}
