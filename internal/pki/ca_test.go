package pki_test

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/translog/logkey"
)

// The files Init writes, with their modes.
var initFiles = map[string]fs.FileMode{
	pki.ConfigFile:           0o644,
	pki.BundleFile:           0o644,
	pki.RootCertFile:         0o644,
	pki.RootKeyFile:          0o600,
	pki.IntermediateCertFile: 0o644,
	pki.IntermediateKeyFile:  0o600,
	"server/cert.pem":        0o644,
	"server/key.pem":         0o600,
	"server/bundle.pem":      0o644,
	"admin/cert.pem":         0o644,
	"admin/key.pem":          0o600,
	"admin/bundle.pem":       0o644,
	logkey.KeyFile:           0o600,
	logkey.VerifierFile:      0o644,
}

func TestInit(t *testing.T) {
	for _, kt := range pki.KeyTypes {
		t.Run(string(kt), func(t *testing.T) {
			ca := initCA(t, kt)
			checkFiles(t, ca)
			checkRoot(t, ca, kt)
			checkIntermediate(t, ca, kt)
			checkKeys(t, ca)
			checkLeaves(t, ca)
			checkConfig(t, ca, kt)
			t.Run("openssl verify", func(t *testing.T) { checkOpenSSLVerify(t, ca) })
		})
	}
}

// checkFiles: every file is there with its mode, directories are private and
// nothing else is left behind (no staging directory).
func checkFiles(t *testing.T, ca *testCA) {
	t.Helper()
	var found []string
	err := filepath.WalkDir(ca.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(ca.dir, path)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			if perm := info.Mode().Perm(); perm != 0o700 {
				t.Errorf("directory %s has mode %v, want 0700", rel, perm)
			}
			return nil
		}
		rel = filepath.ToSlash(rel)
		found = append(found, rel)
		want, ok := initFiles[rel]
		if !ok {
			t.Errorf("Init left an unexpected file %s", rel)
		} else if perm := info.Mode().Perm(); perm != want {
			t.Errorf("%s has mode %v, want %v", rel, perm, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != len(initFiles) {
		t.Errorf("Init wrote %q, want the %d files %v", found, len(initFiles), initFiles)
	}
}

func checkRoot(t *testing.T, ca *testCA, kt pki.KeyType) {
	t.Helper()
	root := ca.res.Root
	if files := readCerts(t, ca.path(pki.RootCertFile)); len(files) != 1 || !files[0].Equal(root) {
		t.Errorf("%s does not hold exactly the root", pki.RootCertFile)
	}
	if bundle := readCerts(t, ca.path(pki.BundleFile)); len(bundle) != 1 || !bundle[0].Equal(root) {
		t.Errorf("%s does not hold exactly the root", pki.BundleFile)
	}
	checkKeyType(t, kt, root.PublicKey)
	if err := root.CheckSignatureFrom(root); err != nil {
		t.Errorf("root is not self-signed: %v", err)
	}
	if !root.IsCA || !root.BasicConstraintsValid || root.MaxPathLen != 1 {
		t.Errorf("root: IsCA %v, MaxPathLen %d; want a CA with MaxPathLen 1", root.IsCA, root.MaxPathLen)
	}
	if root.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("root KeyUsage = %b, want certSign|cRLSign", root.KeyUsage)
	}
	if pki.RootTTL != 10*365*24*time.Hour {
		t.Errorf("RootTTL = %v, want 10 years", pki.RootTTL)
	}
	checkValidity(t, "root", root, ca.now, pki.RootTTL)
	if want := "example.org root CA"; root.Subject.CommonName != want {
		t.Errorf("root CN = %q, want %q", root.Subject.CommonName, want)
	}
}

func checkIntermediate(t *testing.T, ca *testCA, kt pki.KeyType) {
	t.Helper()
	inter := ca.res.Intermediate
	if files := readCerts(t, ca.path(pki.IntermediateCertFile)); len(files) != 1 || !files[0].Equal(inter) {
		t.Errorf("%s does not hold exactly the intermediate", pki.IntermediateCertFile)
	}
	checkKeyType(t, kt, inter.PublicKey)
	if err := inter.CheckSignatureFrom(ca.res.Root); err != nil {
		t.Errorf("intermediate not signed by the root: %v", err)
	}
	if !inter.IsCA || !inter.BasicConstraintsValid {
		t.Error("intermediate is not a CA")
	}
	if inter.MaxPathLen != 0 || !inter.MaxPathLenZero {
		t.Errorf("intermediate MaxPathLen %d (zero %v), want 0 and MaxPathLenZero", inter.MaxPathLen, inter.MaxPathLenZero)
	}
	if inter.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("intermediate KeyUsage = %b, want certSign|cRLSign", inter.KeyUsage)
	}
	if !reflect.DeepEqual(inter.PermittedURIDomains, []string{"example.org"}) || !inter.PermittedDNSDomainsCritical {
		t.Errorf("intermediate permits URI domains %q (critical %v), want [example.org], critical",
			inter.PermittedURIDomains, inter.PermittedDNSDomainsCritical)
	}
	if len(inter.PermittedDNSDomains)+len(inter.ExcludedDNSDomains)+len(inter.ExcludedURIDomains) != 0 {
		t.Error("intermediate has name constraints beyond the trust domain")
	}
	if pki.IntermediateTTL != 365*24*time.Hour {
		t.Errorf("IntermediateTTL = %v, want 1 year", pki.IntermediateTTL)
	}
	checkValidity(t, "intermediate", inter, ca.now, pki.IntermediateTTL)
}

// checkValidity: NotBefore is back-dated by ClockSkew; NotAfter is now+ttl.
func checkValidity(t *testing.T, what string, c *x509.Certificate, now time.Time, ttl time.Duration) {
	t.Helper()
	if pki.ClockSkew != time.Minute {
		t.Errorf("ClockSkew = %v, want 1m", pki.ClockSkew)
	}
	if want := now.Add(-time.Minute); !c.NotBefore.Equal(want) {
		t.Errorf("%s NotBefore = %v, want %v", what, c.NotBefore, want)
	}
	if want := now.Add(ttl); !c.NotAfter.Equal(want) {
		t.Errorf("%s NotAfter = %v, want %v", what, c.NotAfter, want)
	}
}

func checkKeys(t *testing.T, ca *testCA) {
	t.Helper()
	for _, k := range []struct {
		file string
		cert *x509.Certificate
	}{
		{pki.RootKeyFile, ca.res.Root},
		{pki.IntermediateKeyFile, ca.res.Intermediate},
	} {
		data, err := os.ReadFile(ca.path(k.file))
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := pem.Decode(data); b == nil || b.Type != "ENCRYPTED PRIVATE KEY" {
			t.Errorf("%s is not an encrypted PKCS#8 key", k.file)
			continue
		}
		if _, err := pki.ParsePrivateKey(data, []byte("wrong")); !errors.Is(err, pki.ErrWrongPassphrase) {
			t.Errorf("%s with a wrong passphrase: %v, want ErrWrongPassphrase", k.file, err)
		}
		key := readKey(t, ca.path(k.file), []byte(testPassphrase))
		if !pki.PublicKeysEqual(key.Public(), k.cert.PublicKey) {
			t.Errorf("%s does not belong to its certificate", k.file)
		}
	}
}

// checkLeaves: the service and operator identities chain to the root, carry
// the right IDs and names, and their keys are unencrypted (services start
// without a passphrase).
func checkLeaves(t *testing.T, ca *testCA) {
	t.Helper()
	for _, l := range []struct {
		dir  string
		id   spiffeid.ID
		ttl  time.Duration
		dns  []string
		ips  []string
		want spiffeid.ID
	}{
		{pki.ServerDir, ca.res.ServerID, pki.ServerTTL, []string{"localhost"}, []string{"127.0.0.1"}, spiffeid.RequireFromString("spiffe://example.org/mutual/server")},
		{pki.AdminDir, ca.res.AdminID, pki.DefaultAdminTTL, nil, nil, spiffeid.RequireFromString("spiffe://example.org/admin/operator")},
	} {
		if l.id != l.want {
			t.Errorf("InitResult names %s, want %s", l.id, l.want)
		}
		chain := readCerts(t, ca.path(l.dir+"/cert.pem"))
		if len(chain) != 2 || !chain[1].Equal(ca.res.Intermediate) {
			t.Fatalf("%s/cert.pem holds %d certificates, want the leaf and the intermediate", l.dir, len(chain))
		}
		leaf := chain[0]
		id, err := x509svid.IDFromCert(leaf)
		if err != nil || id != l.want {
			t.Errorf("%s leaf has SPIFFE ID %v (%v), want %s", l.dir, id, err, l.want)
		}
		checkValidity(t, l.dir, leaf, ca.now, l.ttl)
		if !slices.Equal(leaf.DNSNames, l.dns) || len(leaf.IPAddresses) != len(l.ips) {
			t.Errorf("%s leaf names DNS %q, IP %v; want %q, %q", l.dir, leaf.DNSNames, leaf.IPAddresses, l.dns, l.ips)
		}
		for i, ip := range l.ips {
			if i < len(leaf.IPAddresses) && !leaf.IPAddresses[i].Equal(net.ParseIP(ip)) {
				t.Errorf("%s leaf IP %d = %v, want %s", l.dir, i, leaf.IPAddresses[i], ip)
			}
		}
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := pki.VerifyChain(chain, []*x509.Certificate{ca.res.Root}, ca.now, usage); err != nil {
				t.Errorf("%s leaf does not verify for usage %v: %v", l.dir, usage, err)
			}
		}
		keyPEM, err := os.ReadFile(ca.path(l.dir + "/key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := pem.Decode(keyPEM); b == nil || b.Type != "PRIVATE KEY" {
			t.Errorf("%s/key.pem is not an unencrypted PKCS#8 key", l.dir)
		}
		key := readKey(t, ca.path(l.dir+"/key.pem"), nil)
		if !pki.PublicKeysEqual(key.Public(), leaf.PublicKey) {
			t.Errorf("%s/key.pem does not belong to its certificate", l.dir)
		}
		bundle, err := os.ReadFile(ca.path(l.dir + "/bundle.pem"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(bundle, pki.EncodeCertificates(ca.res.Root)) {
			t.Errorf("%s/bundle.pem is not the root", l.dir)
		}
	}
}

func checkConfig(t *testing.T, ca *testCA, kt pki.KeyType) {
	t.Helper()
	data, err := os.ReadFile(ca.path(pki.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	var cfg pki.Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("%s: %v", pki.ConfigFile, err)
	}
	want := pki.Config{TrustDomain: "example.org", KeyType: kt, CreatedAt: ca.now, Policy: pki.DefaultPolicy}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("%s = %+v, want %+v", pki.ConfigFile, cfg, want)
	}
	// Operators edit this file: durations are written as words.
	for _, s := range []string{`"default_cert_ttl": "1h0m0s"`, `"max_cert_ttl": "24h0m0s"`, `"max_token_ttl": "168h0m0s"`} {
		if !bytes.Contains(data, []byte(s)) {
			t.Errorf("%s does not contain %s:\n%s", pki.ConfigFile, s, data)
		}
	}
}

// checkOpenSSLVerify: openssl accepts the chains, name constraints included.
func checkOpenSSLVerify(t *testing.T, ca *testCA) {
	t.Helper()
	bin := openssl(t)
	for _, leaf := range []string{"admin/cert.pem", "server/cert.pem"} {
		cmd := exec.Command(bin, "verify", "-CAfile", "bundle.pem", "-untrusted", "intermediate/cert.pem", leaf)
		cmd.Dir = ca.dir
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != leaf+": OK" {
			t.Errorf("openssl verify %s: %v\n%s", leaf, err, out)
		}
	}
	// Without the intermediate there is no chain.
	cmd := exec.Command(bin, "verify", "-CAfile", "bundle.pem", "admin/cert.pem")
	cmd.Dir = ca.dir
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("openssl verified the admin certificate without its intermediate:\n%s", out)
	}
}

func TestInitOptions(t *testing.T) {
	ca := initCA(t, pki.KeyECDSAP256, func(o *pki.InitOptions) {
		o.SANs = []string{"CA.Example.org", " 10.1.2.3 ", "::1", "*.ca.example.org"}
		o.AdminName = "alice"
		o.AdminTTL = 2 * time.Hour
		o.TrustDomain = spiffeid.RequireTrustDomainFromString("corp.example")
	})
	if want := spiffeid.RequireFromString("spiffe://corp.example/admin/alice"); ca.res.AdminID != want {
		t.Errorf("AdminID = %s, want %s", ca.res.AdminID, want)
	}
	if want := spiffeid.RequireFromString("spiffe://corp.example/mutual/server"); ca.res.ServerID != want {
		t.Errorf("ServerID = %s, want %s", ca.res.ServerID, want)
	}
	if got := ca.res.Intermediate.PermittedURIDomains; !slices.Equal(got, []string{"corp.example"}) {
		t.Errorf("intermediate permits %q, want [corp.example]", got)
	}
	admin := readCerts(t, ca.path("admin/cert.pem"))[0]
	checkValidity(t, "admin", admin, ca.now, 2*time.Hour)
	server := readCerts(t, ca.path("server/cert.pem"))[0]
	if want := []string{"ca.example.org", "*.ca.example.org"}; !slices.Equal(server.DNSNames, want) {
		t.Errorf("server DNS names = %q, want %q", server.DNSNames, want)
	}
	if len(server.IPAddresses) != 2 || !server.IPAddresses[0].Equal(net.ParseIP("10.1.2.3")) || !server.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("server IPs = %v, want [10.1.2.3 ::1]", server.IPAddresses)
	}
}

func TestInitIntoExistingEmptyDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("notes"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := pki.Init(pki.InitOptions{Dir: dir, TrustDomain: exampleTD, Passphrase: []byte(testPassphrase), Iterations: testIterations})
	if err != nil {
		t.Fatalf("Init in a directory holding no CA: %v", err)
	}
}

func TestInitRefuses(t *testing.T) {
	valid := func() pki.InitOptions {
		return pki.InitOptions{
			Dir:         filepath.Join(t.TempDir(), "ca"),
			TrustDomain: exampleTD,
			Passphrase:  []byte(testPassphrase),
			Iterations:  testIterations,
		}
	}
	tests := []struct {
		name   string
		change func(*pki.InitOptions)
		// names is a piece of the message that points at the fault.
		names string
	}{
		{"no directory", func(o *pki.InitOptions) { o.Dir = "" }, "directory"},
		{"no trust domain", func(o *pki.InitOptions) { o.TrustDomain = spiffeid.TrustDomain{} }, "trust domain"},
		{"no passphrase", func(o *pki.InitOptions) { o.Passphrase = nil }, "passphrase"},
		{"empty passphrase", func(o *pki.InitOptions) { o.Passphrase = []byte{} }, "passphrase"},
		{"bad SAN", func(o *pki.InitOptions) { o.SANs = []string{"localhost", "ca_1.example.org"} }, "ca_1.example.org"},
		{"bad admin name", func(o *pki.InitOptions) { o.AdminName = "alice/bob" }, "alice/bob"},
		{"unknown key type", func(o *pki.InitOptions) { o.KeyType = "dsa" }, "dsa"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := valid()
			tt.change(&o)
			res, err := pki.Init(o)
			if err == nil {
				t.Fatalf("Init succeeded: %+v", res)
			}
			if errors.Is(err, pki.ErrCAExists) {
				t.Errorf("err = %v, want a reason other than ErrCAExists", err)
			}
			if !strings.Contains(err.Error(), tt.names) {
				t.Errorf("error %q does not name %q", err, tt.names)
			}
			if o.Dir != "" {
				if _, err := os.Stat(o.Dir); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("a failed Init left %s behind (stat: %v)", o.Dir, err)
				}
			}
		})
	}
}

func TestInitRefusesToOverwrite(t *testing.T) {
	t.Run("a whole CA", func(t *testing.T) {
		ca := initCA(t, pki.KeyECDSAP256)
		before := snapshot(t, ca.dir)
		_, err := pki.Init(pki.InitOptions{Dir: ca.dir, TrustDomain: exampleTD, Passphrase: []byte("other"), Iterations: testIterations})
		if !errors.Is(err, pki.ErrCAExists) {
			t.Fatalf("second Init: err = %v, want ErrCAExists", err)
		}
		if !strings.Contains(err.Error(), ca.dir) {
			t.Errorf("error %q does not name the directory", err)
		}
		if after := snapshot(t, ca.dir); !reflect.DeepEqual(before, after) {
			t.Error("the refused Init changed the existing CA")
		}
	})
	// Any one part of a CA is enough to refuse.
	for _, name := range []string{pki.ConfigFile, "root", "intermediate", pki.BundleFile, pki.ServerDir, pki.AdminDir} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, name), []byte("keep me"), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := pki.Init(pki.InitOptions{Dir: dir, TrustDomain: exampleTD, Passphrase: []byte(testPassphrase), Iterations: testIterations})
			if !errors.Is(err, pki.ErrCAExists) {
				t.Fatalf("err = %v, want ErrCAExists", err)
			}
			if !strings.Contains(err.Error(), name) {
				t.Errorf("error %q does not name %s", err, name)
			}
			want := map[string]string{name: "keep me"}
			if got := snapshot(t, dir); !reflect.DeepEqual(got, want) {
				t.Errorf("directory now holds %q, want only %q", got, want)
			}
		})
	}
}

// snapshot reads every file under dir.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		rel, _ := filepath.Rel(dir, path)
		files[filepath.ToSlash(rel)] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestLoadCA(t *testing.T) {
	ca := initCA(t, pki.KeyECDSAP256)
	loaded, err := pki.LoadCA(ca.dir, []byte(testPassphrase))
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Dir != ca.dir || loaded.TrustDomain != exampleTD {
		t.Errorf("LoadCA: dir %q, trust domain %s", loaded.Dir, loaded.TrustDomain)
	}
	if len(loaded.Roots) != 1 || !loaded.Roots[0].Equal(ca.res.Root) {
		t.Error("LoadCA roots are not the root Init made")
	}
	if !loaded.Issuer.Cert.Equal(ca.res.Intermediate) || !pki.PublicKeysEqual(loaded.Issuer.Key.Public(), ca.res.Intermediate.PublicKey) {
		t.Error("LoadCA issuer is not the intermediate")
	}
	if loaded.Config.Policy != pki.DefaultPolicy || loaded.Config.KeyType != pki.KeyECDSAP256 {
		t.Errorf("LoadCA config = %+v", loaded.Config)
	}
}

func TestLoadCAWrongPassphrase(t *testing.T) {
	ca := initCA(t, pki.KeyECDSAP256)
	_, err := pki.LoadCA(ca.dir, []byte("not the passphrase"))
	if !errors.Is(err, pki.ErrWrongPassphrase) {
		t.Fatalf("err = %v, want ErrWrongPassphrase", err)
	}
	if !strings.Contains(err.Error(), ca.path(pki.IntermediateKeyFile)) {
		t.Errorf("error %q does not name the key file", err)
	}
	if _, err := pki.LoadCA(ca.dir, nil); err == nil {
		t.Error("LoadCA without a passphrase succeeded")
	}
}

func TestLoadCAWithoutRootKey(t *testing.T) {
	ca := initCA(t, pki.KeyECDSAP256)
	// The root key may be moved offline; the service does not need it.
	if err := os.Remove(ca.path(pki.RootKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.LoadCA(ca.dir, []byte(testPassphrase)); err != nil {
		t.Fatal(err)
	}
}

func TestLoadCAPolicy(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		want   pki.Policy
	}{
		{"missing means defaults", `{}`, pki.DefaultPolicy},
		{"edited", `{"default_cert_ttl":"30m","max_cert_ttl":"2h","max_token_ttl":"1h"}`,
			pki.Policy{DefaultTTL: pki.Duration(30 * time.Minute), MaxTTL: pki.Duration(2 * time.Hour), MaxTokenTTL: pki.Duration(time.Hour)}},
		{"partly edited", `{"max_cert_ttl":"72h"}`,
			pki.Policy{DefaultTTL: pki.DefaultPolicy.DefaultTTL, MaxTTL: pki.Duration(72 * time.Hour), MaxTokenTTL: pki.DefaultPolicy.MaxTokenTTL}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := initCA(t, pki.KeyECDSAP256)
			cfg := `{"trust_domain":"example.org","key_type":"ecdsa-p256","policy":` + tt.policy + `}`
			writeFile(t, ca.path(pki.ConfigFile), []byte(cfg))
			loaded, err := pki.LoadCA(ca.dir, []byte(testPassphrase))
			if err != nil {
				t.Fatal(err)
			}
			if loaded.Config.Policy != tt.want {
				t.Errorf("policy = %+v, want %+v", loaded.Config.Policy, tt.want)
			}
		})
	}
}

func TestLoadCABroken(t *testing.T) {
	other := initCA(t, pki.KeyECDSAP256)
	tests := []struct {
		name   string
		damage func(t *testing.T, ca *testCA)
		// names is a piece of the message that points at the fault.
		names string
	}{
		{"no CA", func(t *testing.T, ca *testCA) { os.RemoveAll(ca.dir) }, "mutual ca init"},
		{"config not JSON", func(t *testing.T, ca *testCA) { writeFile(t, ca.path(pki.ConfigFile), []byte("trust_domain = x")) }, pki.ConfigFile},
		{"bad trust domain", func(t *testing.T, ca *testCA) {
			writeFile(t, ca.path(pki.ConfigFile), []byte(`{"trust_domain":"Example Org"}`))
		}, "trust_domain"},
		{"bad duration", func(t *testing.T, ca *testCA) {
			writeFile(t, ca.path(pki.ConfigFile), []byte(`{"trust_domain":"example.org","policy":{"max_cert_ttl":24}}`))
		}, pki.ConfigFile},
		{"no bundle", func(t *testing.T, ca *testCA) { os.Remove(ca.path(pki.BundleFile)) }, pki.BundleFile},
		{"corrupt intermediate certificate", func(t *testing.T, ca *testCA) {
			writeFile(t, ca.path(pki.IntermediateCertFile), []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
		}, pki.IntermediateCertFile},
		{"no intermediate key", func(t *testing.T, ca *testCA) { os.Remove(ca.path(pki.IntermediateKeyFile)) }, pki.IntermediateKeyFile},
		{"another CA's intermediate key", func(t *testing.T, ca *testCA) {
			data, err := os.ReadFile(other.path(pki.IntermediateKeyFile))
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, ca.path(pki.IntermediateKeyFile), data)
		}, "does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := initCA(t, pki.KeyECDSAP256)
			tt.damage(t, ca)
			loaded, err := pki.LoadCA(ca.dir, []byte(testPassphrase))
			if err == nil {
				t.Fatalf("LoadCA succeeded: %+v", loaded)
			}
			if !strings.Contains(err.Error(), tt.names) {
				t.Errorf("error %q does not name %q", err, tt.names)
			}
		})
	}
}

func TestSplitSANs(t *testing.T) {
	tests := []struct {
		in   []string
		dns  []string
		ips  []string
		fail string // the name the error must name; empty: no error
	}{
		{in: nil},
		{in: []string{"localhost", "127.0.0.1"}, dns: []string{"localhost"}, ips: []string{"127.0.0.1"}},
		{in: []string{" CA.Example.ORG ", "::1", "2001:db8::10"}, dns: []string{"ca.example.org"}, ips: []string{"::1", "2001:db8::10"}},
		{in: []string{"*.example.org", "a-b.example.org", "xn--bcher-kva.example"}, dns: []string{"*.example.org", "a-b.example.org", "xn--bcher-kva.example"}},
		{in: []string{"localhost", ""}, fail: `""`},
		{in: []string{"ca_1.example.org"}, fail: "ca_1.example.org"},
		{in: []string{"http://ca.example.org"}, fail: "http://ca.example.org"},
		{in: []string{"10.0.0.0/8"}, fail: "10.0.0.0/8"},
		{in: []string{"ca.example.org:8443"}, fail: "ca.example.org:8443"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.in, ","), func(t *testing.T) {
			dns, ips, err := pki.SplitSANs(tt.in)
			if tt.fail != "" {
				if err == nil || !strings.Contains(err.Error(), tt.fail) {
					t.Fatalf("SplitSANs = %q, %v, %v; want an error naming %s", dns, ips, err, tt.fail)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(dns, tt.dns) {
				t.Errorf("DNS names = %q, want %q", dns, tt.dns)
			}
			if len(ips) != len(tt.ips) {
				t.Fatalf("IPs = %v, want %q", ips, tt.ips)
			}
			for i := range ips {
				if !ips[i].Equal(net.ParseIP(tt.ips[i])) {
					t.Errorf("IP %d = %v, want %s", i, ips[i], tt.ips[i])
				}
			}
		})
	}
}

func TestCheckDNSName(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	name253 := strings.Repeat(long63+".", 3) + strings.Repeat("b", 61) // 3*64 + 61 = 253
	tests := []struct {
		name string
		ok   bool
	}{
		{"localhost", true},
		{"ca.example.org", true},
		{"CA.Example.Org", true},
		{"*.example.org", true},
		{"0day.example", true},
		{long63 + ".example", true},
		{name253, true},
		{"", false},
		{"*.", false},
		{"*", false},
		{"a.*.example.org", false},
		{"**.example.org", false},
		{".example.org", false},
		{"example.org.", false},
		{"a..example.org", false},
		{"-a.example.org", false},
		{"a-.example.org", false},
		{"a_b.example.org", false},
		{"ca.example.org ", false},
		{"bücher.example", false},
		{strings.Repeat("a", 64) + ".example", false},
		{name253 + "b", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := pki.CheckDNSName(tt.name)
			if tt.ok && err != nil {
				t.Errorf("CheckDNSName(%q) = %v", tt.name, err)
			}
			if !tt.ok && (err == nil || !strings.Contains(err.Error(), tt.name)) {
				t.Errorf("CheckDNSName(%q) = %v, want an error naming it", tt.name, err)
			}
		})
	}
}
