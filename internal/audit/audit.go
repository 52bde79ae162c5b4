// Package audit finds the misconfigurations that undo mutual TLS: trust
// bundles that trust too much, revocation left off, long or weak
// certificates, old TLS, a proxy left in permissive mode, CA keys exposed.
// Each finding carries a severity, the evidence and the fix.
package audit

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/tlsprobe"
	"github.com/mutual-tls/mutual/internal/translog/logkey"
)

// Severity orders findings.
type Severity int

// Severities, lowest first.
const (
	Info Severity = iota
	Low
	Medium
	High
	Critical
)

var severityNames = []string{"info", "low", "medium", "high", "critical"}

func (s Severity) String() string { return severityNames[s] }

// MarshalJSON writes the name.
func (s Severity) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// ParseSeverity reads a severity name.
func ParseSeverity(s string) (Severity, error) {
	for i, n := range severityNames {
		if strings.EqualFold(n, s) {
			return Severity(i), nil
		}
	}
	return 0, fmt.Errorf("unknown severity %q: use info, low, medium, high or critical", s)
}

// Finding is one misconfiguration.
type Finding struct {
	ID       string   `json:"id"`
	Severity Severity `json:"severity"`
	Title    string   `json:"title"`
	Evidence string   `json:"evidence"`
	Fix      string   `json:"fix"`
}

// ProxyConfig describes a deployed proxy, as an operator writes it down
// (YAML): the flags it runs with and where its metrics listener is.
//
//	mode: permissive        # strict or permissive
//	tls12: false
//	ca: [https://ca:8443]   # revocation feed / CRL; empty: mutual.json or the proxy's certificate
//	no-revocation: false    # true: the proxy checks no revocation at all
//	metrics: http://127.0.0.1:9102   # to read /migration
//	allow: ["spiffe://example.org/ns/prod/*"]
//	policy: /etc/mutual/api-policy.yaml     # audited rule by rule
//	identity-dir: /etc/mutual/api           # key modes, bundle, lifetime
//
// An outbound proxy is written down with its --expect and --server-name:
//
//	direction: outbound     # inbound (default) or outbound
//	expect: ["spiffe://example.org/ns/prod/db"]
//	server-name: ""         # empty: the server is authenticated by SPIFFE ID alone
type ProxyConfig struct {
	Mode         string   `yaml:"mode"`
	TLS12        bool     `yaml:"tls12"`
	CA           []string `yaml:"ca"`
	NoRevocation bool     `yaml:"no-revocation"`
	Metrics      string   `yaml:"metrics"`
	Allow        []string `yaml:"allow"`
	Direction    string   `yaml:"direction"`
	Expect       []string `yaml:"expect"`
	ServerName   string   `yaml:"server-name"`
	// Policy is the proxy's --policy file, audited rule by rule.
	Policy string `yaml:"policy"`
	// IdentityDir is the proxy's --identity-dir: key modes, bundle, lifetime.
	IdentityDir string `yaml:"identity-dir"`
}

// Options say what to audit. Every part is optional.
type Options struct {
	CADir       string
	ProxyConfig string
	Bundle      string
	Targets     []string
	// Deployment fields (see deployment.go): EtcDir, PolicyFiles,
	// IdentityDirs, CAURL, TrustDomain.
	Deployment
	// ExpiryWarning flags certificates expiring sooner; default 30 days.
	ExpiryWarning time.Duration
	// MaxLifetime is the policy maximum for leaves; default from the CA's
	// ca.json, else 24h.
	MaxLifetime time.Duration
	// SystemRoots are the public web roots to look for in bundles; nil
	// means the system's (/etc/ssl/certs).
	SystemRoots []*x509.Certificate
	Now         func() time.Time
	Timeout     time.Duration
}

// Report is the audit's outcome.
type Report struct {
	Findings []Finding `json:"findings"`
	Checked  []string  `json:"checked"`
	// CAKeys says where each key of an audited CA directory lives.
	CAKeys []CAKey `json:"ca_keys,omitempty"`
}

// CAKey is where one CA key lives, and the validity of its certificate.
type CAKey struct {
	// Role is "root", "intermediate", "issuance log" or "OCSP responder".
	Role string `json:"role"`
	// Store is "token" (a PKCS#11 token), "file-encrypted",
	// "file-unencrypted", "memory" (the OCSP responder's default: made at
	// start, never written) or "absent" (not on this host: a root kept
	// offline).
	Store string `json:"store"`
	// Location is the pkcs11: URI or the file path.
	Location string `json:"location"`
	// NotBefore and NotAfter are the key's certificate's validity (zero for
	// the issuance log key, which has none).
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
}

// Worst returns the highest severity found (Info when nothing was found).
func (r *Report) Worst() Severity {
	w := Info
	for _, f := range r.Findings {
		w = max(w, f.Severity)
	}
	return w
}

type auditor struct {
	o   Options
	r   *Report
	td  string
	own []*x509.Certificate // the CA's roots
	// dirs are the identity directories already audited (deployment.go).
	dirs map[string]bool
}

func (a *auditor) add(id string, sev Severity, title, evidence, fix string) {
	a.r.Findings = append(a.r.Findings, Finding{ID: id, Severity: sev, Title: title, Evidence: evidence, Fix: fix})
}

// Run audits what o names.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.ExpiryWarning == 0 {
		o.ExpiryWarning = 30 * 24 * time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	a := &auditor{o: o, r: &Report{Findings: []Finding{}}}
	if o.CADir != "" {
		if err := a.ca(); err != nil {
			return nil, err
		}
	}
	if a.o.MaxLifetime == 0 {
		a.o.MaxLifetime = 24 * time.Hour
	}
	if o.Bundle != "" {
		if err := a.bundle(o.Bundle); err != nil {
			return nil, err
		}
	} else if o.CADir != "" {
		a.bundle(filepath.Join(o.CADir, pki.BundleFile))
	}
	if o.ProxyConfig != "" {
		if err := a.proxy(ctx, o.ProxyConfig); err != nil {
			return nil, err
		}
	}
	if err := a.deployment(ctx); err != nil {
		return nil, err
	}
	for _, t := range o.Targets {
		a.target(ctx, t)
	}
	sort.SliceStable(a.r.Findings, func(i, j int) bool { return a.r.Findings[i].Severity > a.r.Findings[j].Severity })
	return a.r, nil
}

// ca checks a CA directory: key files, root key presence, constraints,
// policy, expiries.
func (a *auditor) ca() error {
	dir := a.o.CADir
	a.r.Checked = append(a.r.Checked, "CA directory "+dir)
	raw, err := os.ReadFile(filepath.Join(dir, pki.ConfigFile))
	if err != nil {
		return fmt.Errorf("--ca %s: %w", dir, err)
	}
	var cfg pki.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return fmt.Errorf("--ca %s: %w", dir, err)
	}
	a.td = cfg.TrustDomain
	if a.o.MaxLifetime == 0 {
		a.o.MaxLifetime = time.Duration(cfg.Policy.MaxTTL)
		if a.o.MaxLifetime == 0 {
			a.o.MaxLifetime = 24 * time.Hour
		}
		if a.o.MaxLifetime > 24*time.Hour {
			a.add("policy-lifetime", Medium, "the CA's maximum certificate lifetime is above 24 hours",
				fmt.Sprintf("%s: max_cert_ttl is %s", filepath.Join(dir, pki.ConfigFile), a.o.MaxLifetime),
				"set policy.max_cert_ttl to 24h or less: short lifetimes bound the damage of a stolen key")
		}
	}
	// Key files.
	for _, k := range []struct {
		path      string
		encrypted bool
	}{{pki.RootKeyFile, true}, {pki.IntermediateKeyFile, true}, {logkey.KeyFile, true}, {"server/key.pem", false}, {"admin/key.pem", false}} {
		p := filepath.Join(dir, k.path)
		st, err := os.Stat(p)
		if err != nil {
			continue
		}
		if st.Mode().Perm()&0o077 != 0 {
			a.add("key-permissions", High, "a key file is readable by others",
				fmt.Sprintf("%s has mode %04o", p, st.Mode().Perm()), fmt.Sprintf("chmod 600 %s", p))
		}
		if k.encrypted {
			b, _ := os.ReadFile(p)
			if blk, _ := pem.Decode(b); blk != nil && blk.Type != "ENCRYPTED PRIVATE KEY" {
				a.add("key-unencrypted", Critical, "a CA key is stored unencrypted",
					fmt.Sprintf("%s is a %q PEM block", p, blk.Type),
					"encrypt it: openssl pkcs8 -topk8 -v2 aes-256-cbc -in KEY -out KEY.enc, and replace it (mode 0600)")
			}
		}
	}
	retiredRoots, _ := filepath.Glob(filepath.Join(dir, pki.RetiredRootsDir, "*", "key.pem"))
	for _, p := range append([]string{filepath.Join(dir, pki.RootKeyFile)}, retiredRoots...) {
		if _, err := os.Stat(p); err == nil {
			a.add("root-key-online", High, "a root key is on the online CA host", p+" exists",
				"move it offline (encrypted media in a safe) and delete it here: the CA service never needs it")
		}
	}
	a.locateKeys(dir, cfg)
	// Certificates.
	for _, f := range []string{pki.RootCertFile, pki.IntermediateCertFile, "server/cert.pem", "admin/cert.pem"} {
		certs, err := pki.ReadCertificates(filepath.Join(dir, f))
		if err != nil {
			continue
		}
		c := certs[0]
		if f == pki.RootCertFile {
			a.own = append(a.own, c)
		}
		if f == pki.IntermediateCertFile && len(c.PermittedURIDomains) == 0 && len(c.PermittedDNSDomains) == 0 {
			a.add("intermediate-unconstrained", High, "the intermediate has no name constraints",
				fmt.Sprintf("%s (%s) permits any URI", filepath.Join(dir, f), c.Subject),
				"reissue it with a URI name constraint to the trust domain (mutual ca init does), so a stolen key cannot mint identities elsewhere")
		}
		a.certChecks(filepath.Join(dir, f), c, f == "server/cert.pem" || f == "admin/cert.pem")
	}
	return nil
}

// locateKeys records where the root, intermediate and log keys of the CA
// in dir live.
func (a *auditor) locateKeys(dir string, cfg pki.Config) {
	for _, k := range []struct{ role, ref, file, cert string }{
		{"root", cfg.Keys.Root, pki.RootKeyFile, pki.RootCertFile},
		{"intermediate", cfg.Keys.Intermediate, pki.IntermediateKeyFile, pki.IntermediateCertFile},
		{"issuance log", cfg.Keys.Log, logkey.KeyFile, ""},
	} {
		key := CAKey{Role: k.role, Store: "token", Location: k.ref}
		if k.ref == "" {
			key.Location = filepath.Join(dir, k.file)
			b, err := os.ReadFile(key.Location)
			switch blk, _ := pem.Decode(b); {
			case err != nil:
				key.Store = "absent"
			case blk != nil && blk.Type == "ENCRYPTED PRIVATE KEY":
				key.Store = "file-encrypted"
			default:
				key.Store = "file-unencrypted"
			}
		}
		if k.cert != "" {
			if certs, err := pki.ReadCertificates(filepath.Join(dir, k.cert)); err == nil {
				key.NotBefore, key.NotAfter = certs[0].NotBefore, certs[0].NotAfter
			}
		}
		a.r.CAKeys = append(a.r.CAKeys, key)
	}
	ocsp := CAKey{Role: "OCSP responder", Store: "memory", Location: "made by the server at start, certified by the intermediate; never written"}
	if cfg.Keys.OCSP != "" {
		ocsp.Store, ocsp.Location = "token", cfg.Keys.OCSP
	}
	a.r.CAKeys = append(a.r.CAKeys, ocsp)
}

// certChecks flags weak keys, SHA-1 and close expiries; leaf also checks the
// lifetime against policy.
func (a *auditor) certChecks(where string, c *x509.Certificate, leaf bool) {
	now := a.o.Now()
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			a.add("weak-key", High, "a certificate has a weak key", fmt.Sprintf("%s: RSA %d bits", where, k.N.BitLen()), "reissue it with ECDSA P-256 or RSA 3072")
		}
	case *ecdsa.PublicKey:
		if k.Curve.Params().BitSize < 256 {
			a.add("weak-key", High, "a certificate has a weak key", fmt.Sprintf("%s: %s", where, k.Curve.Params().Name), "reissue it with ECDSA P-256")
		}
	}
	switch c.SignatureAlgorithm {
	case x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.DSAWithSHA1, x509.MD5WithRSA, x509.MD2WithRSA:
		a.add("weak-signature", High, "a certificate is signed with SHA-1 or MD5", fmt.Sprintf("%s: %s", where, c.SignatureAlgorithm), "reissue it with SHA-256 or better")
	}
	// CA certificates are warned of early; leaves (renewed routinely) only
	// when they are about to lapse.
	soon, urgent := a.o.ExpiryWarning, 7*24*time.Hour
	if leaf {
		soon, urgent = 7*24*time.Hour, 2*24*time.Hour
		if life := c.NotAfter.Sub(c.NotBefore); life < 14*24*time.Hour {
			soon, urgent = 0, 0 // short-lived: expiring is its nature
		}
	}
	switch left := c.NotAfter.Sub(now); {
	case left <= 0:
		a.add("expired", High, "a certificate has expired", fmt.Sprintf("%s (%s) expired at %s", where, c.Subject, c.NotAfter.UTC().Format(time.RFC3339)), "renew it")
	case left < urgent:
		a.add("expiring", High, "a certificate expires very soon", fmt.Sprintf("%s (%s) expires at %s", where, c.Subject, c.NotAfter.UTC().Format(time.RFC3339)), "renew or rotate it now")
	case left < soon:
		a.add("expiring", Medium, "a certificate expires soon", fmt.Sprintf("%s (%s) expires at %s", where, c.Subject, c.NotAfter.UTC().Format(time.RFC3339)), "plan its renewal or rotation")
	}
	if leaf && !isCAService(c) && !strings.Contains(where, "admin/cert.pem") {
		if life := c.NotAfter.Sub(c.NotBefore); life > a.o.MaxLifetime+2*time.Minute {
			a.add("lifetime-above-policy", Medium, "a certificate lives longer than policy allows",
				fmt.Sprintf("%s: %s, policy maximum %s", where, life.Round(time.Minute), a.o.MaxLifetime), "issue short-lived certificates and renew them (the agent does it at half-life)")
		}
	}
}

// bundle checks a trust bundle used for client authentication.
func (a *auditor) bundle(path string) error {
	certs, err := pki.ReadCertificates(path)
	if err != nil {
		return fmt.Errorf("--bundle %s: %w", path, err)
	}
	a.r.Checked = append(a.r.Checked, "bundle "+path)
	public := map[[32]byte]bool{}
	sys := a.o.SystemRoots
	if sys == nil {
		sys = systemRoots()
	}
	for _, c := range sys {
		public[sha256.Sum256(c.Raw)] = true
	}
	for _, c := range certs {
		if public[sha256.Sum256(c.Raw)] {
			a.add("bundle-public-root", Critical, "the trust bundle includes a public web root",
				fmt.Sprintf("%s: %q is in the system's public roots", path, c.Subject),
				"trust only your own CA for client authentication: anyone can buy a certificate from a public CA")
			continue
		}
		if !c.IsCA {
			a.add("bundle-not-ca", Medium, "the trust bundle holds a certificate that is not a CA", fmt.Sprintf("%s: %q", path, c.Subject), "remove it")
			continue
		}
		if len(a.own) > 0 && !slicesContainsCert(a.own, c) {
			a.add("bundle-foreign-ca", High, "the trust bundle includes a CA unrelated to the trust domain",
				fmt.Sprintf("%s: %q is not the root of %s", path, c.Subject, a.td),
				"remove it, or federate deliberately with a separate bundle per trust domain")
		}
		a.certChecks(path, c, false)
	}
	return nil
}

// isCAService reports whether c is a mutual CA service's own TLS
// certificate (90 days by design, renewed by the CA itself).
func isCAService(c *x509.Certificate) bool {
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" && u.Path == "/mutual/server" {
			return true
		}
	}
	return false
}

func slicesContainsCert(list []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range list {
		if x.Equal(c) {
			return true
		}
	}
	return false
}

// systemRoots reads the Debian/RedHat public root bundles.
func systemRoots() []*x509.Certificate {
	for _, p := range []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"} {
		if certs, err := pki.ReadCertificates(p); err == nil {
			return certs
		}
	}
	return nil
}

// proxy checks a proxy's recorded configuration and asks its metrics
// listener for the migration report.
func (a *auditor) proxy(ctx context.Context, path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--proxy-config: %w", err)
	}
	var pc ProxyConfig
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&pc); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("--proxy-config %s: %w", path, err)
	}
	a.r.Checked = append(a.r.Checked, "proxy "+path)
	return a.proxyConfig(ctx, path, "", pc)
}

// proxyConfig checks one proxy's configuration; where names its source
// (a file) and flag is how the source spells a flag ("" for YAML keys,
// "--" for command-line flags).
func (a *auditor) proxyConfig(ctx context.Context, path, flag string, pc ProxyConfig) error {
	// Without --ca the proxy finds the CA in mutual.json or its own
	// certificate, and refuses to start without one: only --no-revocation
	// turns revocation off.
	if pc.NoRevocation {
		a.add("revocation-off", High, "the proxy does not check revocation",
			path+": "+spell(flag, "no-revocation", "true")+", so the proxy follows no revocation feed or CRL and accepts revoked certificates until they expire",
			"drop --no-revocation and run the proxy with --ca https://CA:PORT (or an identity directory whose mutual.json names the CA)")
	}
	switch pc.Direction {
	case "", "inbound":
		if len(pc.Expect) > 0 || pc.ServerName != "" {
			a.outbound(path, pc)
		}
	case "outbound":
		a.outbound(path, pc)
	default:
		return fmt.Errorf("--proxy-config %s: direction %q: write inbound or outbound", path, pc.Direction)
	}
	a.allowPatterns(path+": "+flag+"allow", pc.Allow, a.ownTrustDomain(pc))
	a.proxyFiles(pc)
	if pc.Mode == "permissive" {
		sev, evidence := Low, path+": "+spell(flag, "mode", "permissive")
		fix := "check GET /migration on the proxy's metrics listener, then switch to --mode strict"
		if pc.Metrics != "" {
			n, err := migrationSources(ctx, pc.Metrics, a.o.Timeout)
			switch {
			case err != nil:
				evidence += fmt.Sprintf("; the migration report could not be read (%v)", err)
			case n == 0:
				sev = Medium
				evidence += "; the migration report shows no client without a certificate"
				fix = "every client now presents a certificate: switch to --mode strict"
			default:
				evidence += fmt.Sprintf("; %d client address(es) still connect without a certificate", n)
				fix = "give those clients identities (see /migration), then switch to --mode strict"
			}
		}
		a.add("permissive-mode", sev, "the proxy is in permissive mode (optional mTLS)", evidence, fix)
	}
	return nil
}

// outbound checks an outbound proxy's expectation of its server. The
// outbound proxy authenticates the server by chain and SPIFFE ID alone
// (X.509-SVID), checking a host name only with --server-name: so --expect
// is all that stands between the client and any other workload of the
// trust domain.
func (a *auditor) outbound(path string, pc ProxyConfig) {
	if len(pc.Expect) == 0 {
		a.add("outbound-expect-broad", High, "the outbound proxy names no server identity",
			path+": direction outbound without expect: the server's SPIFFE ID is not checked (the proxy refuses to start like this)",
			"set expect to the server's exact SPIFFE ID, e.g. expect: [\"spiffe://TRUST-DOMAIN/ns/prod/db\"]")
		return
	}
	for _, s := range pc.Expect {
		p, err := authz.ParsePattern(s)
		if err != nil {
			a.add("outbound-expect-invalid", Medium, "the outbound proxy's expect pattern is invalid", fmt.Sprintf("%s: expect %s: %v", path, s, err),
				"write the server's exact SPIFFE ID")
			continue
		}
		if !proxy.BroadExpectation(p) {
			continue
		}
		whole := strings.HasSuffix(s, "/**") && strings.Count(strings.TrimPrefix(s, "spiffe://"), "/") == 1
		what := "any workload whose ID has this shape"
		sev := Medium
		if whole {
			what, sev = "any identity of the trust domain, node agents and admins included,", High
		}
		if pc.ServerName != "" {
			a.add("outbound-expect-broad", Low, "the outbound proxy's expect is broad; only the server name narrows it",
				fmt.Sprintf("%s: expect %s with server-name %s: %s that also carries the name %s is accepted as the server", path, s, pc.ServerName, what, pc.ServerName),
				"expect the server's exact SPIFFE ID")
			continue
		}
		a.add("outbound-expect-broad", sev, "the outbound proxy would accept another workload as its server",
			fmt.Sprintf("%s: expect %s and no server-name: %s presenting a certificate of the CA is accepted as the server; the server's certificate needs no host name, so its SPIFFE ID is the only check", path, s, what),
			"expect the server's exact SPIFFE ID (e.g. spiffe://TRUST-DOMAIN/ns/prod/db)")
	}
}

func migrationSources(ctx context.Context, base string, timeout time.Duration) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(cctx, http.MethodGet, strings.TrimRight(base, "/")+"/migration", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var v struct {
		Sources []json.RawMessage `json:"sources"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return 0, err
	}
	return len(v.Sources), nil
}

// weakSuites are TLS 1.2 suites a modern mTLS endpoint should not accept.
var weakSuites = []uint16{
	tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_256_CBC_SHA, tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_RSA_WITH_AES_256_GCM_SHA384, tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA,
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	tls.TLS_ECDHE_ECDSA_WITH_RC4_128_SHA, tls.TLS_ECDHE_RSA_WITH_RC4_128_SHA, tls.TLS_RSA_WITH_RC4_128_SHA,
}

// handshakeAccepted tries a handshake limited to versions and suites, with
// no trusted roots: a certificate verification error means the server
// accepted the protocol (no verification is skipped).
func handshakeAccepted(ctx context.Context, addr string, minV, maxV uint16, suites []uint16, timeout time.Duration) (bool, []*x509.Certificate) {
	host, _, _ := net.SplitHostPort(addr)
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	chain, err := tlsprobe.Chain(cctx, &net.Dialer{Timeout: timeout}, addr, &tls.Config{
		ServerName: host, MinVersion: minV, MaxVersion: maxV, CipherSuites: suites,
	})
	return err == nil, chain
}

// target probes a live endpoint's TLS: old versions, weak suites, and its
// certificates.
func (a *auditor) target(ctx context.Context, addr string) {
	a.r.Checked = append(a.r.Checked, "endpoint "+addr)
	ok, chain := handshakeAccepted(ctx, addr, tls.VersionTLS12, tls.VersionTLS13, nil, a.o.Timeout)
	if !ok {
		a.add("unreachable", Medium, "an endpoint could not be audited", addr+": no TLS 1.2 or 1.3 handshake", "check that it runs and speaks TLS (mutual diagnose "+addr+")")
	}
	for _, v := range []struct {
		v    uint16
		name string
	}{{tls.VersionTLS10, "TLS 1.0"}, {tls.VersionTLS11, "TLS 1.1"}} {
		if ok, _ := handshakeAccepted(ctx, addr, v.v, v.v, nil, a.o.Timeout); ok {
			a.add("old-tls", High, "an endpoint accepts TLS below 1.2", fmt.Sprintf("%s accepts %s", addr, v.name),
				"accept TLS 1.2 at least (mutual proxy accepts 1.3 only unless --tls12)")
		}
	}
	var weak []string
	for _, s := range weakSuites {
		if ok, _ := handshakeAccepted(ctx, addr, tls.VersionTLS10, tls.VersionTLS12, []uint16{s}, a.o.Timeout); ok {
			weak = append(weak, tls.CipherSuiteName(s))
		}
	}
	if len(weak) > 0 {
		a.add("weak-suites", Medium, "an endpoint accepts weak cipher suites", fmt.Sprintf("%s accepts %s", addr, strings.Join(weak, ", ")),
			"offer only ECDHE with AES-GCM or ChaCha20-Poly1305 in TLS 1.2 (mutual proxy --tls12 does)")
	}
	for i, c := range chain {
		a.certChecks(fmt.Sprintf("%s certificate %d", addr, i), c, i == 0)
	}
}
