package audit_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/audit"
	"github.com/mutual-tls/mutual/internal/cli"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testenv"
)

// writeIdentity saves id as an identity directory, the way the agent and
// `mutual request` write one (key 0600).
func writeIdentity(t testing.TB, id *identity.Identity) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "identity")
	if err := id.Save(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// etcDir writes /etc/mutual-style environment files: name → MUTUAL_ARGS.
func etcDir(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "etc-mutual")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, args := range files {
		body := "# Copy to /etc/mutual/" + name + " and start the unit.\nMUTUAL_ARGS=" + args + "\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// inboundArgs are the flags of a packaged inbound proxy, with extra ones.
func inboundArgs(idDir, extra string) string {
	return "--listen 0.0.0.0:8443 --target 127.0.0.1:8080 --identity-dir " + idDir + " --ca https://127.0.0.1:8443 " + extra
}

// deployCorpus plants one misconfiguration of a deployed host per case;
// TestFindings runs them. evidence and fix name the file, flag or rule at
// fault and the remedy.
func deployCorpus() []auditCase {
	return []auditCase{
		{
			name: "allow-root-wildcard/env file flag",
			setup: func(t *testing.T) audit.Options {
				c := newOfflineCA(t)
				id := writeIdentity(t, proxyIdentity(t, c.CA))
				return audit.Options{Deployment: audit.Deployment{EtcDir: etcDir(t, map[string]string{
					"proxy-inbound-api.env": inboundArgs(id, "--allow spiffe://example.org/*"),
				})}}
			},
			want:     []string{"allow-root-wildcard:low"},
			evidence: map[string][]string{"allow-root-wildcard": {"proxy-inbound-api.env", "--allow spiffe://example.org/*"}},
			fix:      map[string][]string{"allow-root-wildcard": {"spiffe://example.org/ns/prod/web"}},
		},
		{
			name: "allow-any/policy rule",
			setup: func(t *testing.T) audit.Options {
				pol := writeTemp(t, "policy.yaml", []byte("rules:\n  - ids: [\"spiffe://example.org/ns/prod/web\"]\n  - ids: [\"*\"]\n"))
				return audit.Options{Deployment: audit.Deployment{PolicyFiles: []string{pol}}}
			},
			want: []string{"allow-any:high", "policy-invalid:medium"},
			evidence: map[string][]string{
				"allow-any":      {"policy.yaml rule 2: ids *", "any CA's certificate"},
				"policy-invalid": {"policy.yaml", "policy rule 2"},
			},
			fix: map[string][]string{"allow-any": {"list the SPIFFE IDs"}},
		},
		{
			// The proxy's trust domain comes from its identity directory.
			name: "allow-foreign-wildcard/policy named by the env file",
			setup: func(t *testing.T) audit.Options {
				c := newOfflineCA(t)
				id := writeIdentity(t, proxyIdentity(t, c.CA))
				pol := writeTemp(t, "policy.yaml", []byte("rules:\n  - ids: [\"spiffe://example.org/ns/prod/web\"]\n  - ids: [\"spiffe://partner.com/**\"]\n    methods: [GET]\n"))
				return audit.Options{Deployment: audit.Deployment{EtcDir: etcDir(t, map[string]string{
					"proxy-inbound-api.env": inboundArgs(id, "--policy "+pol+" --protocol http"),
				})}}
			},
			want:     []string{"allow-foreign-wildcard:high"},
			evidence: map[string][]string{"allow-foreign-wildcard": {"policy.yaml rule 2: ids spiffe://partner.com/**", "partner.com's CA"}},
			fix:      map[string][]string{"allow-foreign-wildcard": {"spiffe://partner.com/ns/prod/client", "mutual partner create NAME --trust-domain partner.com"}},
		},
		{
			name: "allow-foreign-wildcard/trust domain from the CA",
			setup: func(t *testing.T) audit.Options {
				c := newOfflineCA(t)
				return audit.Options{CADir: c.Dir, ProxyConfig: proxyYAML(t, "mode: strict\nallow: [\"spiffe://example.org/ns/prod/web\", \"spiffe://other.org/ns/*/db\"]\n")}
			},
			want:     []string{"allow-foreign-wildcard:high"},
			evidence: map[string][]string{"allow-foreign-wildcard": {"proxy.yaml: allow spiffe://other.org/ns/*/db"}},
		},
		{
			name: "permissive-mode/env file, nobody without a certificate",
			setup: func(t *testing.T) audit.Options {
				c := newOfflineCA(t)
				p := runProxy(t, proxyIdentity(t, c.CA), proxy.InboundConfig{Mode: proxy.Permissive})
				id := writeIdentity(t, proxyIdentity(t, c.CA))
				return audit.Options{Deployment: audit.Deployment{EtcDir: etcDir(t, map[string]string{
					"proxy-inbound-api.env": inboundArgs(id, "--allow "+webID+" --mode permissive --metrics "+strings.TrimPrefix(p.metrics, "http://")),
				})}}
			},
			want:     []string{"permissive-mode:medium"},
			evidence: map[string][]string{"permissive-mode": {"proxy-inbound-api.env", "--mode permissive", "no client without a certificate"}},
			fix:      map[string][]string{"permissive-mode": {"--mode strict"}},
		},
		{
			name: "revocation-off/env file",
			setup: func(t *testing.T) audit.Options {
				c := newOfflineCA(t)
				id := writeIdentity(t, proxyIdentity(t, c.CA))
				return audit.Options{Deployment: audit.Deployment{EtcDir: etcDir(t, map[string]string{
					"proxy-inbound-api.env": "--listen :8443 --target 127.0.0.1:8080 --identity-dir " + id + " --allow " + webID + " --no-revocation",
				})}}
			},
			want:     []string{"revocation-off:high"},
			evidence: map[string][]string{"revocation-off": {"proxy-inbound-api.env", "--no-revocation"}},
			fix:      map[string][]string{"revocation-off": {"drop --no-revocation", "--ca https://"}},
		},
		{
			name: "revocation-off/packaged YAML config",
			setup: func(t *testing.T) audit.Options {
				c := newOfflineCA(t)
				id := writeIdentity(t, proxyIdentity(t, c.CA))
				etc := t.TempDir()
				cfg := "listen: 0.0.0.0:8443\ntarget: 127.0.0.1:8080\nidentity-dir: " + id + "\nallow:\n  - " + webID + "\nno-revocation: true\nlog-level: info\n"
				if err := os.WriteFile(filepath.Join(etc, "proxy-inbound-api.yaml"), []byte(cfg), 0o640); err != nil {
					t.Fatal(err)
				}
				return audit.Options{Deployment: audit.Deployment{EtcDir: etc}}
			},
			want:     []string{"revocation-off:high"},
			evidence: map[string][]string{"revocation-off": {"proxy-inbound-api.yaml", "no-revocation: true"}},
			fix:      map[string][]string{"revocation-off": {"--ca https://"}},
		},
		{
			name: "key-permissions/identity directory",
			setup: func(t *testing.T) audit.Options {
				c := newOfflineCA(t)
				id := writeIdentity(t, c.Leaf(t, webID))
				if err := os.Chmod(filepath.Join(id, "key.pem"), 0o644); err != nil {
					t.Fatal(err)
				}
				return audit.Options{Deployment: audit.Deployment{IdentityDirs: []string{id}}}
			},
			want:     []string{"key-permissions:high"},
			evidence: map[string][]string{"key-permissions": {"key.pem has mode 0644"}},
			fix:      map[string][]string{"key-permissions": {"chmod 600", "key.pem", "chown"}},
		},
		{
			name: "key-permissions/key copied into the CA directory",
			setup: func(t *testing.T) audit.Options {
				c := newOfflineCA(t)
				b, err := os.ReadFile(filepath.Join(c.Dir, pki.IntermediateKeyFile))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(filepath.Join(c.Dir, "backup"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(c.Dir, "backup", "intermediate.key"), b, 0o640); err != nil {
					t.Fatal(err)
				}
				return audit.Options{CADir: c.Dir, SystemRoots: []*x509.Certificate{}}
			},
			want:     []string{"key-permissions:high"},
			evidence: map[string][]string{"key-permissions": {"backup/intermediate.key has mode 0640"}},
			fix:      map[string][]string{"key-permissions": {"chmod 600"}},
		},
		{
			name: "bundle-unrelated-root/another trust domain's root",
			setup: func(t *testing.T) audit.Options {
				c := newOfflineCA(t)
				other := testca.New(t, testca.WithTrustDomain("other.org"))
				id := c.Leaf(t, webID)
				id.Roots = append(id.Roots, other.Root)
				return audit.Options{Deployment: audit.Deployment{IdentityDirs: []string{writeIdentity(t, id)}}}
			},
			want:     []string{"bundle-unrelated-root:high"},
			evidence: map[string][]string{"bundle-unrelated-root": {"bundle.pem", "other.org root CA", "example.org intermediate CA"}},
			fix:      map[string][]string{"bundle-unrelated-root": {"bundle.pem", "federation"}},
		},
		{
			// A root of the same name that did not issue the chain (a
			// second example.org CA) is just as foreign.
			name: "bundle-unrelated-root/extra root of the same name",
			setup: func(t *testing.T) audit.Options {
				c := newOfflineCA(t)
				twin := testca.New(t)
				id := c.Leaf(t, webID)
				id.Roots = append(id.Roots, twin.Root)
				return audit.Options{Deployment: audit.Deployment{IdentityDirs: []string{writeIdentity(t, id)}}}
			},
			want:     []string{"bundle-unrelated-root:high"},
			evidence: map[string][]string{"bundle-unrelated-root": {"example.org root CA"}},
		},
		{
			// The CA directory's bundle.pem with a root besides the one
			// that issued the intermediate.
			name: "bundle-foreign-ca/extra root in the CA's bundle",
			setup: func(t *testing.T) audit.Options {
				c := newOfflineCA(t)
				twin := testca.New(t)
				if err := os.WriteFile(filepath.Join(c.Dir, pki.BundleFile), pki.EncodeCertificates(c.Root, twin.Root), 0o644); err != nil {
					t.Fatal(err)
				}
				return audit.Options{CADir: c.Dir}
			},
			want:     []string{"bundle-foreign-ca:high"},
			evidence: map[string][]string{"bundle-foreign-ca": {"bundle.pem", "example.org root CA", "is not the root of example.org"}},
			fix:      map[string][]string{"bundle-foreign-ca": {"remove it"}},
		},
		{
			name: "lifetime-above-policy/written directory",
			setup: func(t *testing.T) audit.Options {
				c := newOfflineCA(t)
				id := writeIdentity(t, c.Leaf(t, webID, testca.TTL(72*time.Hour)))
				return audit.Options{CADir: c.Dir, Deployment: audit.Deployment{IdentityDirs: []string{id}}}
			},
			want:     []string{"lifetime-above-policy:medium"},
			evidence: map[string][]string{"lifetime-above-policy": {"identity/cert.pem", "72h", "policy maximum 24h0m0s"}},
			fix:      map[string][]string{"lifetime-above-policy": {"short-lived"}},
		},
		{
			// Certificates issued before the policy was tightened outlive
			// it: the CA's list shows them.
			name: "lifetime-above-policy/the CA's certificate list",
			setup: func(t *testing.T) audit.Options {
				c := newOfflineCA(t)
				ca := testenv.StartCA(t, testenv.Options{CA: c.CA})
				ca.Enroll(t, webID, api.TokenRequest{CertTTL: api.Duration(12 * time.Hour)})
				editConfig(t, c.Dir, func(cfg *pki.Config) { cfg.Policy.MaxTTL = pki.Duration(time.Hour) })
				return audit.Options{CADir: c.Dir, Deployment: audit.Deployment{CAURL: ca.URL}}
			},
			want:     []string{"lifetime-above-policy:medium"},
			evidence: map[string][]string{"lifetime-above-policy": {"lists serial", webID, "12h", "policy maximum 1h0m0s"}},
			fix:      map[string][]string{"lifetime-above-policy": {"mutual cert revoke", "--serial"}},
		},
	}
}

// TestCleanDeployment: a host set up as the packages and docs say (CA
// directory with the root key offline, a running CA whose certificates
// are within policy, an inbound proxy with a policy file and an outbound
// proxy from their env files, written identity directories) has no
// finding, and every part is listed as checked.
func TestCleanDeployment(t *testing.T) {
	c := newOfflineCA(t)
	ca := testenv.StartCA(t, testenv.Options{CA: c.CA})
	web := ca.Enroll(t, webID, api.TokenRequest{})
	webDir := writeIdentity(t, web)
	// A key written 0640 for the workload's group (agent --write
	// ...,mode=0640) is as intended.
	if err := os.Chmod(filepath.Join(webDir, "key.pem"), 0o640); err != nil {
		t.Fatal(err)
	}
	strict := runProxy(t, proxyIdentity(t, c.CA), proxy.InboundConfig{})
	apiDir := writeIdentity(t, proxyIdentity(t, c.CA))
	pol := writeTemp(t, "policy.yaml", []byte("rules:\n  - ids: [\"spiffe://example.org/ns/prod/web\"]\n  - ids: [\"spiffe://partner.com/partner/example/billing\"]\n    methods: [GET]\n    paths: [/invoices/]\n"))
	etc := etcDir(t, map[string]string{
		"proxy-inbound-api.env":  inboundArgs(apiDir, "--policy "+pol+" --protocol http --metrics "+strings.TrimPrefix(strict.metrics, "http://")),
		"proxy-outbound-db.env":  "--listen 127.0.0.1:15001 --target db.internal:8443 --expect spiffe://example.org/ns/prod/db --identity-dir " + webDir + " --ca " + ca.URL,
		"agent.env":              "--token-file /etc/mutual/node-token",
		"proxy-inbound-old.env~": "--no-revocation",
	})
	o := audit.Options{CADir: c.Dir, Timeout: 5 * time.Second, Deployment: audit.Deployment{EtcDir: etc, CAURL: ca.URL, IdentityDirs: []string{webDir}}}
	r, err := audit.Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Findings) != 0 {
		t.Fatalf("a clean deployment has findings:\n%s", describe(r))
	}
	for _, want := range []string{
		"proxy " + filepath.Join(etc, "proxy-inbound-api.env"), "policy " + pol, "identity directory " + apiDir,
		"proxy " + filepath.Join(etc, "proxy-outbound-db.env"), "identity directory " + webDir, "certificates issued by " + ca.URL,
	} {
		if !slices.Contains(r.Checked, want) {
			t.Errorf("%q is not among the checked: %q", want, r.Checked)
		}
	}
}

// TestDeploymentErrors: what audit cannot read or understand stops it
// with an error naming the file and what to do, rather than passing.
func TestDeploymentErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		o    func(t *testing.T) audit.Options
		want []string
	}{
		{"unknown flag", func(t *testing.T) audit.Options {
			return audit.Options{Deployment: audit.Deployment{EtcDir: etcDir(t, map[string]string{"proxy-inbound-a.env": "--listen :1 --allow-all"})}}
		}, []string{"proxy-inbound-a.env", "unknown flag --allow-all"}},
		{"unterminated quote", func(t *testing.T) audit.Options {
			return audit.Options{Deployment: audit.Deployment{EtcDir: etcDir(t, map[string]string{"proxy-inbound-a.env": "--allow 'spiffe://x/y"})}}
		}, []string{"proxy-inbound-a.env", "MUTUAL_ARGS", "quote"}},
		{"missing etc directory", func(t *testing.T) audit.Options {
			return audit.Options{Deployment: audit.Deployment{EtcDir: filepath.Join(t.TempDir(), "nope")}}
		}, []string{"--etc"}},
		{"ca-url without ca", func(t *testing.T) audit.Options {
			return audit.Options{Deployment: audit.Deployment{CAURL: "https://127.0.0.1:1", IdentityDirs: nil}}
		}, []string{"--ca-url", "--ca DIR"}},
		{"identity directory without certificate", func(t *testing.T) audit.Options {
			return audit.Options{Deployment: audit.Deployment{IdentityDirs: []string{t.TempDir()}}}
		}, []string{"identity directory", "cert.pem"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := audit.Run(context.Background(), c.o(t))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestSplitArgs: MUTUAL_ARGS is split as systemd splits an unquoted $VAR.
func TestSplitArgs(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  --a  b\t--c ", []string{"--a", "b", "--c"}},
		{`--allow "spiffe://td/a b" --x='y z'`, []string{"--allow", "spiffe://td/a b", "--x=y z"}},
		{`a\ b "q\"d" 's\n'`, []string{"a b", `q"d`, `s\n`}},
		{`""`, []string{""}},
	} {
		got, err := audit.SplitArgs(c.in)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("SplitArgs(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{`"open`, `'open`, `trailing\`} {
		if _, err := audit.SplitArgs(bad); err == nil {
			t.Errorf("SplitArgs(%q) did not fail", bad)
		}
	}
}

// TestParseEnvFile: comments, quotes, continuation lines; a line that is
// not KEY=VALUE is an error naming it.
func TestParseEnvFile(t *testing.T) {
	env, err := audit.ParseEnvFile([]byte("# c\n; c\n\nA=1\nMUTUAL_ARGS=\"--listen :1 \\\n --mode permissive\"\n B = 'x y' \n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"A": "1", "MUTUAL_ARGS": "--listen :1  --mode permissive", "B": "x y"}
	if fmt.Sprint(env) != fmt.Sprint(want) {
		t.Fatalf("got %q, want %q", env, want)
	}
	if _, err := audit.ParseEnvFile([]byte("A=1\njust words\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("a bad line: %v", err)
	}
}

// TestProxyFlags: both flag spellings, lists, booleans; bad input names
// the flag.
func TestProxyFlags(t *testing.T) {
	pc, err := audit.ProxyFlags([]string{"--allow=spiffe://td/a,spiffe://td/b", "--allow", "spiffe://td/c", "--mode", "permissive",
		"--no-revocation", "--tls12=false", "--metrics", "127.0.0.1:9", "--policy", "/p.yaml", "--identity-dir", "/id"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pc.Allow, []string{"spiffe://td/a", "spiffe://td/b", "spiffe://td/c"}) || pc.Mode != "permissive" || !pc.NoRevocation ||
		pc.TLS12 || pc.Metrics != "http://127.0.0.1:9" || pc.Policy != "/p.yaml" || pc.IdentityDir != "/id" {
		t.Fatalf("%+v", pc)
	}
	if pc, _ := audit.ProxyFlags(nil); pc.Mode != "strict" {
		t.Fatalf("default mode %q", pc.Mode)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "--bogus"},
		{[]string{"--allow"}, "--allow needs a value"},
		{[]string{"--no-revocation=yes"}, "--no-revocation=yes"},
		{[]string{"inbound"}, "\"inbound\""},
	} {
		if _, err := audit.ProxyFlags(c.args); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ProxyFlags(%q): %v, want an error saying %q", c.args, err, c.want)
		}
	}
}

// TestCLIDeployment: `mutual audit --etc DIR --identity-dir DIR --policy
// FILE` prints each planted finding with its evidence and fix, and fails
// at the default --fail-on high.
func TestCLIDeployment(t *testing.T) {
	c := newOfflineCA(t)
	id := writeIdentity(t, proxyIdentity(t, c.CA))
	if err := os.Chmod(filepath.Join(id, "key.pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	pol := writeTemp(t, "policy.yaml", []byte("rules:\n  - ids: [\"spiffe://other.org/**\"]\n"))
	etc := etcDir(t, map[string]string{"proxy-inbound-api.env": inboundArgs(id, "--allow spiffe://example.org/* --no-revocation")})
	var out, errOut bytes.Buffer
	err := cli.Run(context.Background(), []string{"audit", "--etc", etc, "--policy", pol, "--trust-domain", "example.org"}, strings.NewReader(""), &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "--fail-on high") {
		t.Fatalf("mutual audit: %v, want a failure at --fail-on high\n%s", err, out.String())
	}
	for _, w := range []string{
		"revocation-off", "--no-revocation", "key-permissions", "chmod 600 " + filepath.Join(id, "key.pem"),
		"allow-root-wildcard", "--allow spiffe://example.org/*", "allow-foreign-wildcard", "policy.yaml rule 1: ids spiffe://other.org/**",
	} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("the output does not say %q:\n%s", w, out.String())
		}
	}
}
