package audit_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/audit"
	"github.com/mutual-tls/mutual/internal/cli"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testnet"
)

// publicRoot stands for a public web root: the audit is handed it as the
// system's roots, so no test depends on the machine's /etc/ssl.
func publicRoot(t testing.TB) *x509.Certificate {
	return selfSigned(t, "Public Web Root CA", ecKey(t), time.Now().Add(-time.Hour), time.Now().Add(10*365*24*time.Hour), 0)
}

type auditCase struct {
	name string
	// setup crafts the misconfiguration and returns what to audit.
	setup func(t *testing.T) audit.Options
	// want is the exact set of findings, as "id:severity".
	want []string
	// evidence are words each finding of that ID must show as evidence.
	evidence map[string][]string
}

// proxyYAML writes a proxy description for --proxy-config.
func proxyYAML(t testing.TB, y string) string {
	return writeTemp(t, "proxy.yaml", []byte(y))
}

func auditCorpus() []auditCase {
	year := 365 * 24 * time.Hour
	day := 24 * time.Hour
	return []auditCase{
		{
			name: "bundle-public-root",
			setup: func(t *testing.T) audit.Options {
				pub := publicRoot(t)
				return audit.Options{Bundle: writeTemp(t, "bundle.pem", pki.EncodeCertificates(pub)), SystemRoots: []*x509.Certificate{pub}}
			},
			want:     []string{"bundle-public-root:critical"},
			evidence: map[string][]string{"bundle-public-root": {"Public Web Root CA", "bundle.pem"}},
		},
		{
			name: "bundle-foreign-ca",
			setup: func(t *testing.T) audit.Options {
				c := newOfflineCA(t)
				other := testca.New(t, testca.WithTrustDomain("other.org"))
				b := pki.EncodeCertificates(c.Root, other.Root)
				return audit.Options{CADir: c.Dir, Bundle: writeTemp(t, "bundle.pem", b), SystemRoots: []*x509.Certificate{publicRoot(t)}}
			},
			want:     []string{"bundle-foreign-ca:high"},
			evidence: map[string][]string{"bundle-foreign-ca": {"other.org root CA", "example.org"}},
		},
		{
			name: "bundle-not-ca",
			setup: func(t *testing.T) audit.Options {
				c := testca.New(t)
				leaf := c.Leaf(t, webID).Leaf()
				return audit.Options{Bundle: writeTemp(t, "bundle.pem", pki.EncodeCertificates(c.Root, leaf)), SystemRoots: []*x509.Certificate{}}
			},
			want: []string{"bundle-not-ca:medium"},
		},
		{
			name: "revocation-off",
			setup: func(t *testing.T) audit.Options {
				return audit.Options{ProxyConfig: proxyYAML(t, "mode: strict\nno-revocation: true\nallow: [\"spiffe://example.org/ns/prod/web\"]\n")}
			},
			want:     []string{"revocation-off:high"},
			evidence: map[string][]string{"revocation-off": {"proxy.yaml", "no-revocation"}},
		},
		{
			// No ca: the proxy takes the CA from mutual.json or its own
			// certificate, or does not start; not a finding.
			name: "revocation from the certificate",
			setup: func(t *testing.T) audit.Options {
				return audit.Options{ProxyConfig: proxyYAML(t, "mode: strict\nallow: [\"spiffe://example.org/ns/prod/web\"]\n")}
			},
		},
		{
			name: "allow-whole-domain",
			setup: func(t *testing.T) audit.Options {
				return audit.Options{ProxyConfig: proxyYAML(t, "mode: strict\nca: [\"https://127.0.0.1:8443\"]\nallow: [\"spiffe://example.org/**\"]\n")}
			},
			want:     []string{"allow-whole-domain:low"},
			evidence: map[string][]string{"allow-whole-domain": {"spiffe://example.org/**"}},
		},
		{
			// Issue 25: the outbound proxy authenticates its server by
			// SPIFFE ID alone, so --expect must name it.
			name: "outbound-expect-broad/whole trust domain",
			setup: func(t *testing.T) audit.Options {
				return audit.Options{ProxyConfig: proxyYAML(t, "direction: outbound\nca: [\"https://127.0.0.1:8443\"]\nexpect: [\"spiffe://example.org/**\"]\n")}
			},
			want:     []string{"outbound-expect-broad:high"},
			evidence: map[string][]string{"outbound-expect-broad": {"spiffe://example.org/**", "no server-name", "node agents"}},
		},
		{
			name: "outbound-expect-broad/one segment at the root",
			setup: func(t *testing.T) audit.Options {
				return audit.Options{ProxyConfig: proxyYAML(t, "direction: outbound\nca: [\"https://127.0.0.1:8443\"]\nexpect: [\"spiffe://example.org/*\"]\n")}
			},
			want:     []string{"outbound-expect-broad:medium"},
			evidence: map[string][]string{"outbound-expect-broad": {"spiffe://example.org/*", "no server-name"}},
		},
		{
			name: "outbound-expect-broad/missing",
			setup: func(t *testing.T) audit.Options {
				return audit.Options{ProxyConfig: proxyYAML(t, "direction: outbound\nca: [\"https://127.0.0.1:8443\"]\n")}
			},
			want:     []string{"outbound-expect-broad:high"},
			evidence: map[string][]string{"outbound-expect-broad": {"without expect"}},
		},
		{
			name: "outbound-expect-broad/narrowed by a server name",
			setup: func(t *testing.T) audit.Options {
				return audit.Options{ProxyConfig: proxyYAML(t, "direction: outbound\nca: [\"https://127.0.0.1:8443\"]\nexpect: [\"spiffe://example.org/**\"]\nserver-name: db.internal\n")}
			},
			want:     []string{"outbound-expect-broad:low"},
			evidence: map[string][]string{"outbound-expect-broad": {"db.internal"}},
		},
		{
			// The documented outbound setup: the exact ID, no name needed.
			name: "outbound exact expect",
			setup: func(t *testing.T) audit.Options {
				return audit.Options{ProxyConfig: proxyYAML(t, "direction: outbound\nca: [\"https://127.0.0.1:8443\"]\nexpect: [\"spiffe://example.org/ns/prod/db\", \"spiffe://example.org/ns/prod/*\"]\n")}
			},
		},
		{
			// Permissive, and the migration report of the running proxy
			// shows nobody without a certificate: it should be strict.
			name: "permissive-mode/nobody without a certificate",
			setup: func(t *testing.T) audit.Options {
				p := runProxy(t, proxyIdentity(t, testca.New(t)), proxy.InboundConfig{Mode: proxy.Permissive})
				return audit.Options{ProxyConfig: proxyYAML(t, fmt.Sprintf("mode: permissive\nca: [\"https://127.0.0.1:8443\"]\nmetrics: %s\n", p.metrics))}
			},
			want:     []string{"permissive-mode:medium"},
			evidence: map[string][]string{"permissive-mode": {"no client without a certificate"}},
		},
		{
			name: "permissive-mode/a plaintext client remains",
			setup: func(t *testing.T) audit.Options {
				p := runProxy(t, proxyIdentity(t, testca.New(t)), proxy.InboundConfig{Mode: proxy.Permissive})
				conn, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprint(conn, "hello")
				if _, err := conn.Read(make([]byte, 5)); err != nil {
					t.Fatalf("plaintext through a permissive proxy: %v", err)
				}
				conn.Close()
				if len(p.mig.Snapshot()) != 1 {
					t.Fatalf("migration report: %+v", p.mig.Snapshot())
				}
				return audit.Options{ProxyConfig: proxyYAML(t, fmt.Sprintf("mode: permissive\nca: [\"https://127.0.0.1:8443\"]\nmetrics: %s\n", p.metrics))}
			},
			want:     []string{"permissive-mode:low"},
			evidence: map[string][]string{"permissive-mode": {"1 client address"}},
		},
		{
			name: "permissive-mode/migration report unreadable",
			setup: func(t *testing.T) audit.Options {
				ln, _ := net.Listen("tcp", "127.0.0.1:0")
				addr := ln.Addr().String()
				ln.Close()
				return audit.Options{ProxyConfig: proxyYAML(t, fmt.Sprintf("mode: permissive\nca: [\"https://127.0.0.1:8443\"]\nmetrics: http://%s\n", addr))}
			},
			want:     []string{"permissive-mode:low"},
			evidence: map[string][]string{"permissive-mode": {"could not be read"}},
		},
		{
			name: "policy-lifetime",
			setup: func(t *testing.T) audit.Options {
				c := newOfflineCA(t)
				editConfig(t, c.Dir, func(cfg *pki.Config) { cfg.Policy.MaxTTL = pki.Duration(48 * time.Hour) })
				return audit.Options{CADir: c.Dir, SystemRoots: []*x509.Certificate{}}
			},
			want:     []string{"policy-lifetime:medium"},
			evidence: map[string][]string{"policy-lifetime": {"ca.json", "48h"}},
		},
		{
			// A live endpoint with a two-day certificate; the policy is the
			// default 24h.
			name: "lifetime-above-policy/default policy",
			setup: func(t *testing.T) audit.Options {
				c := testca.New(t)
				long := c.Leaf(t, proxyID, testca.IP("127.0.0.1"), testca.TTL(48*time.Hour))
				addr := testnet.ServeTLS(t, &tls.Config{Certificates: []tls.Certificate{long.TLSCertificate()}, MinVersion: tls.VersionTLS13}, nil)
				return audit.Options{Targets: []string{addr}}
			},
			want:     []string{"lifetime-above-policy:medium"},
			evidence: map[string][]string{"lifetime-above-policy": {"certificate 0", "48h1m", "24h"}},
		},
		{
			// The CA's ca.json sets the policy (max 30m): a one-hour
			// certificate is above it (Options.MaxLifetime: "default from the
			// CA's ca.json, else 24h").
			name: "lifetime-above-policy/policy from ca.json",
			setup: func(t *testing.T) audit.Options {
				c := newOfflineCA(t)
				editConfig(t, c.Dir, func(cfg *pki.Config) {
					cfg.Policy.MaxTTL, cfg.Policy.DefaultTTL = pki.Duration(30*time.Minute), pki.Duration(15*time.Minute)
				})
				leaf := c.Leaf(t, proxyID, testca.IP("127.0.0.1"), testca.TTL(time.Hour))
				addr := testnet.ServeTLS(t, &tls.Config{Certificates: []tls.Certificate{leaf.TLSCertificate()}, MinVersion: tls.VersionTLS13}, nil)
				return audit.Options{CADir: c.Dir, Targets: []string{addr}, SystemRoots: []*x509.Certificate{}}
			},
			want:     []string{"lifetime-above-policy:medium"},
			evidence: map[string][]string{"lifetime-above-policy": {"1h1m", "30m"}},
		},
		{
			// An RSA-1024 certificate issued by the test CA's intermediate
			// (made with crypto/x509: pki issues no such thing), served over
			// TLS 1.3.
			name: "weak-key",
			setup: func(t *testing.T) audit.Options {
				c := testca.New(t)
				k, err := rsa.GenerateKey(rand.Reader, 1024)
				if err != nil {
					t.Fatal(err)
				}
				u, _ := url.Parse(proxyID)
				tmpl := &x509.Certificate{
					SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "weak.example"},
					NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
					KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
					URIs: []*url.URL{u}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
				}
				der, err := x509.CreateCertificate(rand.Reader, tmpl, c.Issuer.Cert, &k.PublicKey, c.Issuer.Key)
				if err != nil {
					t.Fatal(err)
				}
				cert := tls.Certificate{Certificate: [][]byte{der, c.Issuer.Cert.Raw}, PrivateKey: k}
				addr := testnet.ServeTLS(t, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}, nil)
				return audit.Options{Targets: []string{addr}}
			},
			want:     []string{"weak-key:high"},
			evidence: map[string][]string{"weak-key": {"RSA 1024 bits"}},
		},
		{
			// crypto/x509 (Go 1.26) still creates SHA1WithRSA signatures
			// when asked explicitly; it only refuses to verify them. The CA
			// certificate goes into the bundle.
			name: "weak-signature",
			setup: func(t *testing.T) audit.Options {
				k, err := rsa.GenerateKey(rand.Reader, 2048)
				if err != nil {
					t.Fatal(err)
				}
				c := selfSigned(t, "SHA-1 CA", k, time.Now().Add(-time.Hour), time.Now().Add(year), x509.SHA1WithRSA)
				if c.SignatureAlgorithm != x509.SHA1WithRSA {
					t.Fatalf("made a %s certificate", c.SignatureAlgorithm)
				}
				return audit.Options{Bundle: writeTemp(t, "bundle.pem", pki.EncodeCertificates(c)), SystemRoots: []*x509.Certificate{}}
			},
			want:     []string{"weak-signature:high"},
			evidence: map[string][]string{"weak-signature": {"SHA1-RSA"}},
		},
		{
			// A crypto/tls server with MinVersion TLS 1.0 (set explicitly,
			// no GODEBUG needed). TLS 1.0 and 1.1 have CBC suites only, so
			// weak-suites comes with it.
			name: "old-tls",
			setup: func(t *testing.T) audit.Options {
				c := testca.New(t)
				srv := c.Leaf(t, proxyID, testca.IP("127.0.0.1"))
				addr := testnet.ServeTLS(t, &tls.Config{Certificates: []tls.Certificate{srv.TLSCertificate()}, MinVersion: tls.VersionTLS10}, nil)
				return audit.Options{Targets: []string{addr}}
			},
			want:     []string{"old-tls:high", "weak-suites:medium"},
			evidence: map[string][]string{"old-tls": {"TLS 1."}},
		},
		{
			name: "weak-suites/TLS 1.2 with a CBC suite",
			setup: func(t *testing.T) audit.Options {
				c := testca.New(t)
				srv := c.Leaf(t, proxyID, testca.IP("127.0.0.1"))
				addr := testnet.ServeTLS(t, &tls.Config{
					Certificates: []tls.Certificate{srv.TLSCertificate()}, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12,
					CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA},
				}, nil)
				return audit.Options{Targets: []string{addr}}
			},
			want:     []string{"weak-suites:medium"},
			evidence: map[string][]string{"weak-suites": {"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"}},
		},
		{
			// crypto/tls's default server configuration still accepts
			// ECDHE CBC-SHA suites in TLS 1.2: the audit says so.
			name: "weak-suites/crypto-tls defaults",
			setup: func(t *testing.T) audit.Options {
				c := testca.New(t)
				srv := c.Leaf(t, proxyID, testca.IP("127.0.0.1"))
				addr := testnet.ServeTLS(t, &tls.Config{Certificates: []tls.Certificate{srv.TLSCertificate()}}, nil)
				return audit.Options{Targets: []string{addr}}
			},
			want: []string{"weak-suites:medium"},
		},
		{
			name: "expiring/CA certificate in 10 days",
			setup: func(t *testing.T) audit.Options {
				c := selfSigned(t, "Soon CA", ecKey(t), time.Now().Add(-year), time.Now().Add(10*day), 0)
				return audit.Options{Bundle: writeTemp(t, "bundle.pem", pki.EncodeCertificates(c)), SystemRoots: []*x509.Certificate{}}
			},
			want:     []string{"expiring:medium"},
			evidence: map[string][]string{"expiring": {"Soon CA"}},
		},
		{
			name: "expiring/CA certificate in 3 days",
			setup: func(t *testing.T) audit.Options {
				c := selfSigned(t, "Very Soon CA", ecKey(t), time.Now().Add(-year), time.Now().Add(3*day), 0)
				return audit.Options{Bundle: writeTemp(t, "bundle.pem", pki.EncodeCertificates(c)), SystemRoots: []*x509.Certificate{}}
			},
			want:     []string{"expiring:high"},
			evidence: map[string][]string{"expiring": {"Very Soon CA"}},
		},
		{
			name: "expiring/CA directory seen 20 days before its intermediate expires",
			setup: func(t *testing.T) audit.Options {
				c := newOfflineCA(t)
				// The server and admin certificates would have lapsed long
				// before: give the CA fresh ones for that day.
				at := c.Intermediate.NotAfter.Add(-20 * day)
				reissueCAIdentities(t, c, at)
				return audit.Options{CADir: c.Dir, SystemRoots: []*x509.Certificate{}, Now: func() time.Time { return at }}
			},
			want:     []string{"expiring:medium"},
			evidence: map[string][]string{"expiring": {"intermediate/cert.pem"}},
		},
		{
			name: "expired/CA certificate in the bundle",
			setup: func(t *testing.T) audit.Options {
				c := selfSigned(t, "Old CA", ecKey(t), time.Now().Add(-year), time.Now().Add(-day), 0)
				return audit.Options{Bundle: writeTemp(t, "bundle.pem", pki.EncodeCertificates(c)), SystemRoots: []*x509.Certificate{}}
			},
			want:     []string{"expired:high"},
			evidence: map[string][]string{"expired": {"Old CA"}},
		},
		{
			name: "expired/endpoint certificate",
			setup: func(t *testing.T) audit.Options {
				c := testca.New(t)
				srv := c.Leaf(t, proxyID, testca.IP("127.0.0.1"), testca.DNS("expired.example"), testca.Expired())
				addr := testnet.ServeTLS(t, &tls.Config{Certificates: []tls.Certificate{srv.TLSCertificate()}, MinVersion: tls.VersionTLS13}, nil)
				return audit.Options{Targets: []string{addr}}
			},
			want:     []string{"expired:high"},
			evidence: map[string][]string{"expired": {"certificate 0", "expired.example"}},
		},
		{
			name: "key-permissions",
			setup: func(t *testing.T) audit.Options {
				c := newOfflineCA(t)
				if err := os.Chmod(filepath.Join(c.Dir, pki.IntermediateKeyFile), 0o644); err != nil {
					t.Fatal(err)
				}
				return audit.Options{CADir: c.Dir, SystemRoots: []*x509.Certificate{}}
			},
			want:     []string{"key-permissions:high"},
			evidence: map[string][]string{"key-permissions": {"intermediate/key.pem", "0644"}},
		},
		{
			name: "key-unencrypted",
			setup: func(t *testing.T) audit.Options {
				c := newOfflineCA(t)
				p := filepath.Join(c.Dir, pki.IntermediateKeyFile)
				k := c.Key(t, pki.IntermediateKeyFile)
				plain, err := pki.MarshalPrivateKey(k, nil, 0)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Contains(plain, []byte("-----BEGIN PRIVATE KEY-----")) {
					t.Fatalf("not an unencrypted PKCS#8 key:\n%s", plain)
				}
				if err := os.WriteFile(p, plain, 0o600); err != nil {
					t.Fatal(err)
				}
				return audit.Options{CADir: c.Dir, SystemRoots: []*x509.Certificate{}}
			},
			want:     []string{"key-unencrypted:critical"},
			evidence: map[string][]string{"key-unencrypted": {"intermediate/key.pem", "PRIVATE KEY"}},
		},
		{
			// What `mutual ca init` leaves: the root key next to the CA.
			name: "root-key-online",
			setup: func(t *testing.T) audit.Options {
				return audit.Options{CADir: testca.New(t).Dir, SystemRoots: []*x509.Certificate{}}
			},
			want:     []string{"root-key-online:high"},
			evidence: map[string][]string{"root-key-online": {"root/key.pem"}},
		},
		{
			name: "intermediate-unconstrained",
			setup: func(t *testing.T) audit.Options {
				c := newOfflineCA(t)
				in := c.Intermediate
				tmpl := &x509.Certificate{
					SerialNumber: big.NewInt(99), Subject: in.Subject, NotBefore: in.NotBefore, NotAfter: in.NotAfter,
					KeyUsage: in.KeyUsage, BasicConstraintsValid: true, IsCA: true, MaxPathLen: 0, MaxPathLenZero: true,
				}
				der, err := x509.CreateCertificate(rand.Reader, tmpl, c.Root, in.PublicKey, c.rootKey)
				if err != nil {
					t.Fatal(err)
				}
				nc, err := x509.ParseCertificate(der)
				if err != nil {
					t.Fatal(err)
				}
				if err := nc.CheckSignatureFrom(c.Root); err != nil || len(nc.PermittedURIDomains) != 0 {
					t.Fatalf("crafted intermediate: %v, constraints %v", err, nc.PermittedURIDomains)
				}
				if err := os.WriteFile(filepath.Join(c.Dir, pki.IntermediateCertFile), pki.EncodeCertificates(nc), 0o644); err != nil {
					t.Fatal(err)
				}
				return audit.Options{CADir: c.Dir, SystemRoots: []*x509.Certificate{}}
			},
			want:     []string{"intermediate-unconstrained:high"},
			evidence: map[string][]string{"intermediate-unconstrained": {"intermediate/cert.pem", "example.org intermediate CA"}},
		},
		{
			name: "unreachable endpoint",
			setup: func(t *testing.T) audit.Options {
				ln, _ := net.Listen("tcp", "127.0.0.1:0")
				addr := ln.Addr().String()
				ln.Close()
				return audit.Options{Targets: []string{addr}}
			},
			want: []string{"unreachable:medium"},
		},
	}
}

// reissueCAIdentities gives the CA's server and admin identities
// certificates valid at "at" (for audits of a CA seen at another time).
func reissueCAIdentities(t testing.TB, c *offlineCA, at time.Time) {
	t.Helper()
	for _, d := range []string{pki.ServerDir, pki.AdminDir} {
		dir := filepath.Join(c.Dir, d)
		chain, err := pki.ReadCertificates(filepath.Join(dir, "cert.pem"))
		if err != nil {
			t.Fatal(err)
		}
		old := chain[0]
		k := ecKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(at.Unix()), Subject: old.Subject, NotBefore: at.Add(-time.Hour), NotAfter: at.Add(time.Hour),
			KeyUsage: old.KeyUsage, ExtKeyUsage: old.ExtKeyUsage, URIs: old.URIs, DNSNames: old.DNSNames, IPAddresses: old.IPAddresses,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, c.Issuer.Cert, k.Public(), c.Issuer.Key)
		if err != nil {
			t.Fatal(err)
		}
		nc, _ := x509.ParseCertificate(der)
		keyPEM, err := pki.MarshalPrivateKey(k, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cert.pem"), pki.EncodeCertificates(nc, c.Issuer.Cert), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFindings crafts one misconfiguration per finding and checks that the
// audit reports exactly it, with its severity, evidence and a fix.
func TestFindings(t *testing.T) {
	for _, c := range auditCorpus() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			o := c.setup(t)
			o.Timeout = 5 * time.Second
			r, err := audit.Run(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if got := summary(r); !slices.Equal(got, c.want) {
				t.Fatalf("findings %v, want %v\n%s", got, c.want, describe(r))
			}
			for _, f := range r.Findings {
				if f.Title == "" || f.Evidence == "" || f.Fix == "" {
					t.Errorf("finding %s lacks a title, evidence or fix: %+v", f.ID, f)
				}
				for _, w := range c.evidence[f.ID] {
					if !strings.Contains(f.Evidence, w) {
						t.Errorf("%s: the evidence does not say %q: %q", f.ID, w, f.Evidence)
					}
				}
			}
			if len(r.Checked) == 0 {
				t.Error("the report lists nothing as checked")
			}
		})
	}
}

// cleanSetup is what the docs tell an operator to run: a CA made by ca
// init with the root key taken offline, a proxy in strict mode that follows
// the CA, the CA's own bundle, and live mutual proxies (TLS 1.3, and TLS 1.2
// allowed).
func cleanSetup(t *testing.T) audit.Options {
	c := newOfflineCA(t)
	strict := runProxy(t, proxyIdentity(t, c.CA), proxy.InboundConfig{})
	tls12 := runProxy(t, proxyIdentity(t, c.CA), proxy.InboundConfig{TLS12: true, Protocol: proxy.HTTP})
	cfg := proxyYAML(t, fmt.Sprintf("mode: strict\ntls12: false\nca: [\"https://127.0.0.1:8443\"]\nmetrics: %s\nallow: [%q]\n", strict.metrics, webID))
	return audit.Options{CADir: c.Dir, ProxyConfig: cfg, Targets: []string{strict.addr, tls12.addr}, Timeout: 5 * time.Second}
}

// TestCleanSetup: a setup made as documented produces no finding at all.
// SystemRoots is left nil: the machine's public roots are read, and the
// CA's root is not among them.
func TestCleanSetup(t *testing.T) {
	o := cleanSetup(t)
	r, err := audit.Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Findings) != 0 {
		t.Fatalf("a clean setup has findings:\n%s", describe(r))
	}
	if r.Worst() != audit.Info {
		t.Fatalf("Worst of no finding: %s", r.Worst())
	}
	want := []string{"CA directory " + o.CADir, "bundle " + filepath.Join(o.CADir, pki.BundleFile), "proxy " + o.ProxyConfig, "endpoint " + o.Targets[0], "endpoint " + o.Targets[1]}
	if !slices.Equal(r.Checked, want) {
		t.Fatalf("checked %q, want %q", r.Checked, want)
	}
}

// TestSeverities: names round-trip, order, JSON, and Worst.
func TestSeverities(t *testing.T) {
	for i, n := range []string{"info", "low", "medium", "high", "critical"} {
		s, err := audit.ParseSeverity(strings.ToUpper(n))
		if err != nil || s != audit.Severity(i) || s.String() != n {
			t.Errorf("ParseSeverity(%q) = %v, %v", n, s, err)
		}
		b, _ := json.Marshal(s)
		if string(b) != `"`+n+`"` {
			t.Errorf("JSON of %s: %s", n, b)
		}
	}
	if _, err := audit.ParseSeverity("severe"); err == nil {
		t.Error("an unknown severity parsed")
	}
	if !(audit.Info < audit.Low && audit.Low < audit.Medium && audit.Medium < audit.High && audit.High < audit.Critical) {
		t.Error("severities out of order")
	}
	r := &audit.Report{}
	if r.Worst() != audit.Info {
		t.Errorf("Worst of nothing: %s", r.Worst())
	}
	r.Findings = []audit.Finding{{ID: "a", Severity: audit.Low}, {ID: "b", Severity: audit.High}, {ID: "c", Severity: audit.Medium}}
	if r.Worst() != audit.High {
		t.Errorf("Worst: %s", r.Worst())
	}
}

// TestFindingsSortedWorstFirst: Run lists the worst findings first.
func TestFindingsSortedWorstFirst(t *testing.T) {
	c := testca.New(t) // root key online: high
	p := filepath.Join(c.Dir, pki.IntermediateKeyFile)
	if err := os.Chmod(p, 0o640); err != nil { // high
		t.Fatal(err)
	}
	cfg := proxyYAML(t, "mode: permissive\nca: [\"https://127.0.0.1:8443\"]\nallow: [\"spiffe://example.org/**\"]\n") // low, low
	editConfig(t, c.Dir, func(cfg *pki.Config) { cfg.Policy.MaxTTL = pki.Duration(72 * time.Hour) })                  // medium
	r, err := audit.Run(context.Background(), audit.Options{CADir: c.Dir, ProxyConfig: cfg, SystemRoots: []*x509.Certificate{}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"allow-whole-domain:low", "key-permissions:high", "permissive-mode:low", "policy-lifetime:medium", "root-key-online:high"}
	if got := summary(r); !slices.Equal(got, want) {
		t.Fatalf("findings %v, want %v\n%s", got, want, describe(r))
	}
	if !slices.IsSortedFunc(r.Findings, func(a, b audit.Finding) int { return int(b.Severity) - int(a.Severity) }) {
		t.Fatalf("not sorted worst first:\n%s", describe(r))
	}
	if r.Worst() != audit.High {
		t.Fatalf("Worst %s", r.Worst())
	}
}

// TestCLIThreshold: `mutual audit` exits non-zero exactly when a finding is
// at --fail-on or above (default high), and --json carries the findings.
func TestCLIThreshold(t *testing.T) {
	withRoot := testca.New(t) // root-key-online: high
	lowOnly := proxyYAML(t, "mode: strict\nca: [\"https://127.0.0.1:8443\"]\nallow: [\"spiffe://example.org/**\"]\n")
	clean := newOfflineCA(t)
	run := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := cli.Run(context.Background(), append([]string{"audit"}, args...), strings.NewReader(""), &out, &errOut)
		return out.String(), err
	}
	for _, c := range []struct {
		args []string
		fail bool
	}{
		{[]string{"--ca", withRoot.Dir}, true}, // default --fail-on high
		{[]string{"--ca", withRoot.Dir, "--fail-on", "high"}, true},
		{[]string{"--ca", withRoot.Dir, "--fail-on", "medium"}, true},
		{[]string{"--ca", withRoot.Dir, "--fail-on", "critical"}, false},
		{[]string{"--proxy-config", lowOnly}, false},
		{[]string{"--proxy-config", lowOnly, "--fail-on", "low"}, true},
		{[]string{"--proxy-config", lowOnly, "--fail-on", "info"}, true},
		{[]string{"--proxy-config", lowOnly, "--fail-on", "medium"}, false},
		{[]string{"--ca", clean.Dir, "--fail-on", "info"}, false}, // no finding: never fails
	} {
		out, err := run(c.args...)
		if (err != nil) != c.fail {
			t.Errorf("mutual audit %v: error %v, want failure %v\n%s", c.args, err, c.fail, out)
		}
		// The library agrees with the exit status.
		o := audit.Options{}
		threshold := audit.High
		for i := 0; i < len(c.args); i += 2 {
			switch c.args[i] {
			case "--ca":
				o.CADir = c.args[i+1]
			case "--proxy-config":
				o.ProxyConfig = c.args[i+1]
			case "--fail-on":
				threshold, _ = audit.ParseSeverity(c.args[i+1])
			}
		}
		r, rerr := audit.Run(context.Background(), o)
		if rerr != nil {
			t.Fatal(rerr)
		}
		if lib := len(r.Findings) > 0 && r.Worst() >= threshold; lib != c.fail {
			t.Errorf("%v: the library says fail=%v (worst %s of %d), the CLI contract %v", c.args, lib, r.Worst(), len(r.Findings), c.fail)
		}
	}
	out, err := run("--ca", withRoot.Dir, "--json", "--fail-on", "critical")
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Findings []struct {
			ID       string `json:"id"`
			Severity string `json:"severity"`
			Evidence string `json:"evidence"`
			Fix      string `json:"fix"`
		} `json:"findings"`
		Checked []string `json:"checked"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if len(rep.Findings) != 1 || rep.Findings[0].ID != "root-key-online" || rep.Findings[0].Severity != "high" || rep.Findings[0].Fix == "" {
		t.Fatalf("--json findings: %+v", rep.Findings)
	}
	out, err = run("--ca", clean.Dir)
	if err != nil || !strings.Contains(out, "no findings") {
		t.Fatalf("clean CA: %v\n%s", err, out)
	}
	if _, err := run(); err == nil || !strings.Contains(err.Error(), "nothing to audit") {
		t.Fatalf("audit with nothing to audit: %v", err)
	}
	if _, err := run("--ca", clean.Dir, "--fail-on", "severe"); err == nil || !strings.Contains(err.Error(), "--fail-on") {
		t.Fatalf("bad --fail-on: %v", err)
	}
}
