package agent_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// spiffeHelperVersion is the spiffe-helper release the interop test runs.
const spiffeHelperVersion = "v0.11.0"

// spiffeHelper returns the spiffe-helper binary to test against:
// $MUTUAL_SPIFFE_HELPER, else the one built in the user cache directory,
// CACHE/mutual-interop/spiffe-helper/VERSION/bin/spiffe-helper. The module
// proxy refuses spiffe-helper's module, so it cannot be go-installed: its
// source tree is placed by hand in .../VERSION/src (a checkout of the
// release tag), and .ci/run builds it from there. Without a binary or a
// source the test skips with a message, CI included (nothing there can
// fetch the source); a source that is present but not built fails on CI.
func spiffeHelper(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("MUTUAL_SPIFFE_HELPER"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("MUTUAL_SPIFFE_HELPER: %v", err)
		}
		return bin
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Skipf("spiffe-helper: no user cache directory to find it in (%v); set MUTUAL_SPIFFE_HELPER", err)
	}
	dir := filepath.Join(cache, "mutual-interop", "spiffe-helper", spiffeHelperVersion)
	bin, src := filepath.Join(dir, "bin", "spiffe-helper"), filepath.Join(dir, "src")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if _, err := os.Stat(filepath.Join(src, "go.mod")); err == nil {
		msg := fmt.Sprintf("spiffe-helper %s: the source is in %s but not built: run .ci/run's step (cd %s && go build -trimpath -o ../bin/spiffe-helper ./cmd/spiffe-helper)", spiffeHelperVersion, src, src)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Skipf("spiffe-helper %s is not available: the module proxy does not serve it; put a checkout of its tag %s in %s (or set MUTUAL_SPIFFE_HELPER to a binary)",
		spiffeHelperVersion, spiffeHelperVersion, src)
	return ""
}

// helperFiles is what spiffe-helper wrote, read as its consumers do.
type helperFiles struct {
	leaf *x509.Certificate
	jwt  *jwtsvid.SVID
}

// readHelperFiles loads the X.509-SVID, its key and bundle, and the
// JWT-SVID and JWT bundle from dir, and checks each against the bundles
// spiffe-helper wrote beside it.
func readHelperFiles(dir, id, audience string) (*helperFiles, error) {
	td := spiffeid.RequireTrustDomainFromString(td)
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid_key.pem"))
	if err != nil {
		return nil, fmt.Errorf("the X.509-SVID and its key: %w", err)
	}
	xb, err := x509bundle.Load(td, filepath.Join(dir, "svid_bundle.pem"))
	if err != nil {
		return nil, err
	}
	certs := make([]*x509.Certificate, len(pair.Certificate))
	for i, der := range pair.Certificate {
		if certs[i], err = x509.ParseCertificate(der); err != nil {
			return nil, err
		}
	}
	got, _, err := x509svid.Verify(certs, xb)
	if err != nil {
		return nil, fmt.Errorf("svid.pem against svid_bundle.pem: %w", err)
	}
	if got.String() != id {
		return nil, fmt.Errorf("svid.pem is %s, want %s", got, id)
	}

	// jwt_bundle.json maps each trust domain to its JWKS, base64-encoded.
	raw, err := os.ReadFile(filepath.Join(dir, "jwt_bundle.json"))
	if err != nil {
		return nil, err
	}
	var set map[string]string
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("jwt_bundle.json: %w", err)
	}
	jwks, err := base64.StdEncoding.DecodeString(set[td.Name()])
	if err != nil {
		return nil, fmt.Errorf("jwt_bundle.json, %s: %w", td.Name(), err)
	}
	jb, err := jwtbundle.Parse(td, jwks)
	if err != nil {
		return nil, fmt.Errorf("jwt_bundle.json, %s: %w", td.Name(), err)
	}
	tok, err := os.ReadFile(filepath.Join(dir, "jwt_svid.token"))
	if err != nil {
		return nil, err
	}
	jwt, err := jwtsvid.ParseAndValidate(strings.TrimSpace(string(tok)), jb, []string{audience})
	if err != nil {
		return nil, fmt.Errorf("jwt_svid.token against jwt_bundle.json: %w", err)
	}
	if jwt.ID.String() != id {
		return nil, fmt.Errorf("jwt_svid.token is for %s, want %s", jwt.ID, id)
	}
	return &helperFiles{leaf: certs[0], jwt: jwt}, nil
}

// TestSpiffeHelper: spiffe-helper, SPIFFE's own file writer, run against
// the agent socket with X.509 and jwt_svids sections, writes a certificate
// and key that match and verify against the bundle it writes, and a
// JWT-SVID that validates against the JWT bundle it writes; when the agent
// rotates (20 s certificates and tokens), the files follow.
func TestSpiffeHelper(t *testing.T) {
	t.Parallel()
	bin := spiffeHelper(t)
	e := testenv.StartCA(t, testenv.Options{})
	id, audience := td+"/ns/prod/helper", "billing"
	entry(t, e, id, td+"/node/h1", 20*time.Second, nil, fmt.Sprintf("unix:uid:%d", os.Getuid()))
	ra := nodeAgent(t, e, "h1", nil)

	dir := filepath.Join(shortDir(t), "certs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(filepath.Dir(dir), "helper.conf")
	cfg := fmt.Sprintf(`agent_address = %q
cert_dir = %q
daemon_mode = true
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
jwt_bundle_file_name = "jwt_bundle.json"
jwt_svids = [{jwt_audience = %q, jwt_svid_file_name = "jwt_svid.token"}]
`, ra.sock, dir, audience)
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	helper := startDaemon(t, "spiffe-helper", exec.Command(bin, "-config", conf))
	read := func() (*helperFiles, error) {
		helper.alive(t)
		return readHelperFiles(dir, id, audience)
	}

	var first *helperFiles
	testwait.EventuallyNil(t, func() (err error) {
		first, err = read()
		return err
	}, "spiffe-helper's X.509 and JWT files, each valid against its bundle")

	// The agent rotates both (20 s lifetimes, renewed at half-life), and
	// spiffe-helper rewrites the files.
	testwait.EventuallyNil(t, func() error {
		f, err := read()
		if err != nil {
			return err
		}
		var stale []string
		if serialOf(f.leaf) == serialOf(first.leaf) {
			stale = append(stale, "svid.pem")
		}
		if f.jwt.Marshal() == first.jwt.Marshal() {
			stale = append(stale, "jwt_svid.token")
		}
		if len(stale) > 0 {
			return errors.New("not rotated yet: " + strings.Join(stale, ", "))
		}
		return nil
	}, "spiffe-helper's files to rotate with the agent")
}
