package caservice_test

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/keyref"
	"github.com/mutual-tls/mutual/internal/keyref/softhsmtest"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
)

// initInToken makes a CA whose keys refs names live in tok, as
// `mutual ca init --root-key ... --intermediate-key ...` does.
func initInToken(t testing.TB, refs pki.KeyRefs) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	kr := keyref.NewKeyring(keyref.Options{})
	defer kr.Close()
	newKey, err := kr.NewCAKey(refs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.InitContext(context.Background(), pki.InitOptions{
		Dir: dir, TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		Passphrase: []byte(testca.Passphrase), Iterations: 1000, NewKey: newKey,
	}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// adminClient is a client of svc holding the operator identity ca init made.
func adminClient(t testing.TB, svc *caservice.Service) *client.Client {
	t.Helper()
	admin, err := identity.Load(filepath.Join(svc.Dir, pki.AdminDir))
	if err != nil {
		t.Fatal(err)
	}
	tc := admin.TLSCertificate()
	cl, err := client.New([]string{svc.URL}, admin.Roots, &tc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.CloseIdleConnections)
	return cl
}

// enroll makes a join token for id and enrolls with it, as a workload does.
func enroll(t testing.TB, svc *caservice.Service, id string) *identity.Identity {
	t.Helper()
	ctx := context.Background()
	tok, err := adminClient(t, svc).CreateToken(ctx, api.TokenRequest{SPIFFEID: id})
	if err != nil {
		t.Fatal(err)
	}
	e, err := client.RequestIdentity(ctx, tok.Token, pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	return e.Identity
}

// verifyChain checks id's chain against the bundle in the CA directory, with
// crypto/x509 and, when it is installed, with openssl verify.
func verifyChain(t *testing.T, dir string, id *identity.Identity) {
	t.Helper()
	roots, err := pki.ReadCertificates(filepath.Join(dir, pki.BundleFile))
	if err != nil {
		t.Fatal(err)
	}
	goVerify(t, id, roots...)
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		return
	}
	tmp := t.TempDir()
	leaf, untrusted := filepath.Join(tmp, "leaf.pem"), filepath.Join(tmp, "chain.pem")
	os.WriteFile(leaf, pki.EncodeCertificates(id.Leaf()), 0o644)
	os.WriteFile(untrusted, pki.EncodeCertificates(id.Chain[1:]...), 0o644)
	out, err := exec.Command(openssl, "verify", "-CAfile", filepath.Join(dir, pki.BundleFile), "-untrusted", untrusted, leaf).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl verify refuses %s: %v\n%s", id.ID, err, out)
	}
}

// TestTokenHeldCAKeys: ca init makes the root and intermediate keys in a
// SoftHSM2 token and writes no file for either; the service signs through
// the token; a workload enrolls and its chain verifies, also after a restart.
func TestTokenHeldCAKeys(t *testing.T) {
	tok := softhsmtest.New(t)
	refs := pki.KeyRefs{Root: tok.URI("root"), Intermediate: tok.URI("intermediate")}
	dir := initInToken(t, refs)
	for _, f := range []string{pki.RootKeyFile, pki.IntermediateKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: want no key file for a token-held key, stat says %v", f, err)
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, pki.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	var cfg pki.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Keys.Root != canonical(t, refs.Root) || cfg.Keys.Intermediate != canonical(t, refs.Intermediate) {
		t.Fatalf("ca.json keys = %+v, want %+v", cfg.Keys, refs)
	}
	o := caservice.Options{Dir: dir, Passphrase: []byte(testca.Passphrase), Listen: "127.0.0.1:0"}
	for round := range 2 { // the second round is a restart
		svc, stop := run(t, o)
		id := enroll(t, svc, "spiffe://example.org/web")
		verifyChain(t, dir, id)
		if err := id.Chain[0].CheckSignatureFrom(id.Chain[1]); err != nil {
			t.Fatalf("round %d: the leaf is not signed by the token's intermediate: %v", round, err)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
	// Without the token's module the CA does not start, and says which key.
	bad := cfg
	bad.Keys.Intermediate = tok.URI("no-such-object")
	raw, _ = json.Marshal(bad)
	if err := os.WriteFile(filepath.Join(dir, pki.ConfigFile), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := caservice.Open(context.Background(), o); !errors.Is(err, keyref.ErrNotFound) {
		t.Fatalf("Open with an unknown token object: %v, want keyref.ErrNotFound", err)
	}
}

// canonical is how keyref writes ref.
func canonical(t *testing.T, ref string) string {
	t.Helper()
	r, err := keyref.Parse(ref)
	if err != nil {
		t.Fatal(err)
	}
	return r.String()
}
