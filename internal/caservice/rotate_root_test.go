package caservice_test

import (
	"context"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
)

// goVerify checks id's chain with crypto/x509 against roots alone.
func goVerify(t *testing.T, id *identity.Identity, roots ...*x509.Certificate) {
	t.Helper()
	pool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	for _, c := range id.Chain[1:] {
		inter.AddCert(c)
	}
	if _, err := id.Leaf().Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("%s does not verify under %d root(s) %q...: %v", id.ID, len(roots), roots[0].Subject.CommonName, err)
	}
}

// opensslVerify checks id's chain, in its order, with openssl verify
// against roots alone.
func opensslVerify(t *testing.T, id *identity.Identity, roots ...*x509.Certificate) {
	t.Helper()
	tmp := t.TempDir()
	files := map[string][]*x509.Certificate{"leaf.pem": id.Chain[:1], "chain.pem": id.Chain[1:], "roots.pem": roots}
	for name, certs := range files {
		if err := os.WriteFile(filepath.Join(tmp, name), pki.EncodeCertificates(certs...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("openssl", "verify", "-CAfile", filepath.Join(tmp, "roots.pem"),
		"-untrusted", filepath.Join(tmp, "chain.pem"), filepath.Join(tmp, "leaf.pem")).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl verify refuses %s under %d root(s) %q...: %v\n%s", id.ID, len(roots), roots[0].Subject.CommonName, err, out)
	}
}

// TestRotateRoot walks a root rotation: introduce a new root (both trusted,
// the new one cross-signed by the old), move issuance to an intermediate of
// the new root, then withdraw the old root once nothing it issued can still
// be valid. Certificates of every phase verify under the bundle of their
// time; the service restarts between phases.
func TestRotateRoot(t *testing.T) {
	ctx := context.Background()
	dir := testca.New(t).Dir
	pass := []byte(testca.Passphrase)
	o := caservice.Options{Dir: dir, Passphrase: pass, Listen: "127.0.0.1:0"}
	ro := caservice.RotateOptions{Dir: dir, Passphrase: pass, Iterations: 1000}

	svc, stop := run(t, o)
	a := enroll(t, svc, "spiffe://example.org/a")
	stop()

	// Introduce: both roots in every bundle, nothing issued changes yet.
	rr, err := caservice.RotateRoot(ctx, ro)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{pki.BundleFile, "admin/bundle.pem", "server/bundle.pem"} {
		if roots, err := pki.ReadCertificates(filepath.Join(dir, f)); err != nil || len(roots) != 2 {
			t.Fatalf("%s holds %d roots (%v), want the old and the new one", f, len(roots), err)
		}
	}
	svc, stop = run(t, o)
	b := enroll(t, svc, "spiffe://example.org/b")
	if b.Chain[1].CheckSignatureFrom(rr.Old) != nil {
		t.Fatal("issuance moved to the new root before the intermediate was rotated")
	}
	stop()

	// Switch: the next intermediate is signed by the new root.
	ri, err := caservice.RotateIntermediate(ctx, ro)
	if err != nil {
		t.Fatal(err)
	}
	if err := ri.New.CheckSignatureFrom(rr.New); err != nil {
		t.Fatalf("the intermediate made after the root rotation is not signed by the new root: %v", err)
	}
	if len(ri.CrossSigned) != 1 || ri.CrossSigned[0].CheckSignatureFrom(rr.Old) != nil || !pki.PublicKeysEqual(ri.CrossSigned[0].PublicKey, ri.New.PublicKey) {
		t.Fatal("the new intermediate is not cross-signed by the old root during the overlap")
	}
	if _, err := caservice.WithdrawRoots(ctx, dir, pass, "", time.Now()); err == nil {
		t.Fatal("the old root was withdrawn while certificates it issued may still be valid")
	}
	svc, stop = run(t, o)
	c := enroll(t, svc, "spiffe://example.org/c")
	for _, id := range []*identity.Identity{a, b, c} {
		verifyChain(t, dir, id)
	}
	// The chain of the overlap is leaf, cross-signed intermediate,
	// intermediate: a party that trusts only the old root verifies it
	// (crypto/x509 and OpenSSL), one that trusts only the new root too with
	// crypto/x509 (which tries each candidate issuer).
	cross, err := pki.ReadCertificates(filepath.Join(dir, pki.CrossSignedFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Chain) != 3 || !c.Chain[1].Equal(cross[0]) || !c.Chain[2].Equal(ri.New) {
		t.Fatalf("the chain issued during the overlap has %d certificates, want leaf, cross-signed intermediate, intermediate", len(c.Chain))
	}
	for _, roots := range [][]*x509.Certificate{{rr.Old}, {rr.New}} {
		goVerify(t, c, roots...)
	}
	opensslVerify(t, c, rr.Old)
	opensslVerify(t, c, rr.Old, rr.New)
	stop()

	// Withdraw, once the longest certificate of the old root has expired.
	later := time.Now().Add(25 * time.Hour)
	withdrawn, err := caservice.WithdrawRoots(ctx, dir, pass, "", later)
	if err != nil {
		t.Fatal(err)
	}
	if len(withdrawn) != 1 || !withdrawn[0].Equal(rr.Old) {
		t.Fatalf("withdrew %d roots, want the old one", len(withdrawn))
	}
	for _, f := range []string{pki.BundleFile, "admin/bundle.pem", "server/bundle.pem"} {
		if roots, err := pki.ReadCertificates(filepath.Join(dir, f)); err != nil || len(roots) != 1 || !roots[0].Equal(rr.New) {
			t.Fatalf("%s after the withdrawal: %d roots (%v), want only the new one", f, len(roots), err)
		}
	}
	svc, stop = run(t, o)
	d := enroll(t, svc, "spiffe://example.org/d") // through the reissued operator identity
	verifyChain(t, dir, d)
	if len(d.Chain) != 2 {
		t.Fatalf("a chain issued after the withdrawal has %d certificates, want leaf, intermediate", len(d.Chain))
	}
	// A certificate of the overlap still verifies under the new root alone
	// with crypto/x509 (OpenSSL takes its cross-signed copy first: such a
	// party verifies it once it renews).
	goVerify(t, c, rr.New)
	stop()
	// Rotating the intermediate again, outside an overlap, cross-signs nothing.
	if ri, err = caservice.RotateIntermediate(ctx, ro); err != nil || len(ri.CrossSigned) != 0 {
		t.Fatalf("rotation after the overlap: %v, %d cross-signed", err, len(ri.CrossSigned))
	}
}
