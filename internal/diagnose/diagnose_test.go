package diagnose_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/diagnose"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testnet"
)

// fixture holds the CAs and identities the corpus is made of: every key is
// made for the test run, none is checked in.
type fixture struct {
	a, b   *testca.CA         // example.org (the client's) and other.org
	server *identity.Identity // apiID from a, for 127.0.0.1 and localhost
	client *identity.Identity // webID from a
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	a := testca.New(t)
	b := testca.New(t, testca.WithTrustDomain("other.org"))
	return &fixture{
		a: a, b: b,
		server: a.Leaf(t, apiID, testca.IP("127.0.0.1"), testca.DNS("localhost")),
		client: a.Leaf(t, webID),
	}
}

// opts are the options of a client with f's client identity that trusts a.
func (f *fixture) opts(addr string) diagnose.Options {
	return diagnose.Options{Addr: addr, Roots: []*x509.Certificate{f.a.Root}, ClientChain: f.client.Chain, ClientKey: f.client.Key}
}

// anonymous are opts without a client identity.
func (f *fixture) anonymous(addr string) diagnose.Options {
	return diagnose.Options{Addr: addr, Roots: []*x509.Certificate{f.a.Root}}
}

// tlsConfig is a crypto/tls server configuration presenting cert.
func tlsConfig(cert tls.Certificate, minV, maxV uint16, auth tls.ClientAuthType, clientCAs *x509.CertPool) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: minV, MaxVersion: maxV, ClientAuth: auth, ClientCAs: clientCAs}
}

// mtlsServer is a TLS server of version v presenting f.server that requires
// and verifies a client certificate from a.
func (f *fixture) mtlsServer(t testing.TB, v uint16) string {
	return serveTLS(t, tlsConfig(f.server.TLSCertificate(), v, v, tls.RequireAndVerifyClientCert, pool(f.a.Root)), nil)
}

type corpusCase struct {
	name string
	// setup builds the broken setup (real servers on 127.0.0.1) and
	// returns what to diagnose.
	setup func(t *testing.T, f *fixture) diagnose.Options
	want  diagnose.Class
	// explain and fix are words that must appear in the Explanation and in
	// the Fix (case-insensitive): they name the thing that is wrong.
	explain, fix []string
	// check, when set, makes further assertions.
	check func(t *testing.T, o diagnose.Options, r *diagnose.Report)
}

var versions = []struct {
	name string
	v    uint16
}{{"TLS1.3", tls.VersionTLS13}, {"TLS1.2", tls.VersionTLS12}}

func corpus() []corpusCase {
	cs := []corpusCase{
		{
			name: "dns/no port",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.opts("127.0.0.1")
			},
			want: diagnose.DNSFailure, explain: []string{"HOST:PORT"}, fix: []string{"HOST:PORT"},
		},
		{
			name: "dns/name does not resolve",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				o := f.opts("no-such-host.invalid:443")
				o.Timeout = 2 * time.Second
				return o
			},
			want: diagnose.DNSFailure, explain: []string{"no-such-host.invalid"}, fix: []string{"DNS"},
		},
		{
			name: "connection refused",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.opts(closedPort(t))
			},
			want: diagnose.ConnectionRefused, explain: []string{"refused"}, fix: []string{"start the service"},
			check: explainsAddr,
		},
		{
			// Linux drops the SYN of a connection to a listener whose accept
			// queue is full: the connect times out.
			name: "connection timeout/full accept queue",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				o := f.opts(testnet.FullBacklog(t))
				o.Timeout = time.Second
				return o
			},
			want: diagnose.ConnectionTimeout, explain: []string{"did not answer"}, fix: []string{"firewall"},
			check: explainsAddr,
		},
		{
			// A server that accepts and never says a word: the handshake
			// times out, which is "not TLS" (nothing answers the ClientHello).
			name: "not TLS/silent listener",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				addr := serveTCP(t, func(c net.Conn) { io.Copy(io.Discard, c) })
				o := f.opts(addr)
				o.Timeout = time.Second
				return o
			},
			want: diagnose.NotTLS, explain: []string{"never answered"}, fix: []string{"port"},
		},
		{
			name: "not TLS/closes at once",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.opts(serveTCP(t, func(c net.Conn) {}))
			},
			want: diagnose.NotTLS, explain: []string{"closed the connection"}, fix: []string{"port"},
		},
		{
			name: "not TLS/plain HTTP",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
				t.Cleanup(s.Close)
				return f.opts(s.Listener.Addr().String())
			},
			want: diagnose.NotTLS, explain: []string{"does not speak TLS"}, fix: []string{"plain HTTP"},
		},
		{
			name: "protocol mismatch/TLS 1.0 and 1.1 only",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.opts(serveTLS(t, tlsConfig(f.server.TLSCertificate(), tls.VersionTLS10, tls.VersionTLS11, tls.NoClientCert, nil), nil))
			},
			want: diagnose.ProtocolMismatch, explain: []string{"no TLS version or cipher suite in common"}, fix: []string{"TLS 1.3", "TLS 1.2"},
		},
		{
			// TLS 1.2 with only a CBC-SHA256 suite, which crypto/tls (and so
			// diagnose) does not offer.
			name: "protocol mismatch/TLS 1.2 with a CBC suite only",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				cfg := tlsConfig(f.server.TLSCertificate(), tls.VersionTLS12, tls.VersionTLS12, tls.NoClientCert, nil)
				cfg.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}
				return f.opts(serveTLS(t, cfg, nil))
			},
			want: diagnose.ProtocolMismatch, explain: []string{"handshake failure"}, fix: []string{"AEAD"},
		},
		{
			// Issue 23: both trust domains are in hand; the verdict names them.
			name: "server of a foreign trust domain",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				other := f.b.Leaf(t, otherID, testca.IP("127.0.0.1"))
				return f.opts(serveTLS(t, tlsConfig(other.TLSCertificate(), tls.VersionTLS12, 0, tls.NoClientCert, nil), nil))
			},
			want: diagnose.ForeignTrustDomain, explain: []string{"other.org", "example.org"}, fix: []string{"federat"},
		},
		{
			name: "missing intermediate",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.opts(serveTLS(t, tlsConfig(leafOnly(f.server), tls.VersionTLS12, 0, tls.NoClientCert, nil), nil))
			},
			want: diagnose.MissingIntermediate, explain: []string{"intermediate"}, fix: []string{"full chain"},
		},
		{
			// Without a client identity diagnose has no intermediate of its
			// own to recognise; the verdict is the same.
			name: "missing intermediate/anonymous client",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.anonymous(serveTLS(t, tlsConfig(leafOnly(f.server), tls.VersionTLS12, 0, tls.NoClientCert, nil), nil))
			},
			want: diagnose.MissingIntermediate, explain: []string{"example.org intermediate CA"}, fix: []string{"full chain"},
		},
		{
			name: "server certificate expired",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				exp := f.a.Leaf(t, apiID, testca.IP("127.0.0.1"), testca.DNS("api.example"), testca.Expired())
				return f.opts(serveTLS(t, tlsConfig(exp.TLSCertificate(), tls.VersionTLS12, 0, tls.NoClientCert, nil), nil))
			},
			want: diagnose.ServerExpired, explain: []string{"expired", "api.example"}, fix: []string{"renew"},
		},
		{
			name: "server certificate not yet valid",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				nyv := f.a.Leaf(t, apiID, testca.IP("127.0.0.1"), testca.DNS("api.example"), testca.NotYetValid())
				return f.opts(serveTLS(t, tlsConfig(nyv.TLSCertificate(), tls.VersionTLS12, 0, tls.NoClientCert, nil), nil))
			},
			// The certificate starts in an hour: a clock is wrong by about
			// that much, and the hint says so.
			want: diagnose.ServerNotYetValid, explain: []string{"not valid yet", "api.example"}, fix: []string{"clock is wrong by about", "NTP"},
			check: func(t *testing.T, o diagnose.Options, r *diagnose.Report) {
				if !strings.Contains(r.Fix, "59m") && !strings.Contains(r.Fix, "1h0m") {
					t.Errorf("the clock-skew hint does not say by how much (about an hour): %q", r.Fix)
				}
			},
		},
		{
			name: "name mismatch/address not in the SANs",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				named := f.a.Leaf(t, apiID, testca.DNS("api.internal"))
				return f.opts(serveTLS(t, tlsConfig(named.TLSCertificate(), tls.VersionTLS12, 0, tls.NoClientCert, nil), nil))
			},
			want: diagnose.NameMismatch, explain: []string{`"127.0.0.1"`, "api.internal"}, fix: []string{"--server-name"},
		},
		{
			name: "name mismatch/--server-name",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				o := f.opts(serveTLS(t, tlsConfig(f.server.TLSCertificate(), tls.VersionTLS12, 0, tls.NoClientCert, nil), nil))
				o.ServerName = "db.internal"
				return o
			},
			want: diagnose.NameMismatch, explain: []string{"db.internal", "localhost"}, fix: []string{"--server-name"},
		},
		{
			// Issue 25: SPIFFE clients authenticate the server by its ID; a
			// certificate without the dialled name is no failure with --expect.
			name: "no name needed/--expect the exact ID",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				nameless := f.a.Leaf(t, apiID)
				o := f.opts(serveTLS(t, tlsConfig(nameless.TLSCertificate(), tls.VersionTLS12, 0, tls.RequireAndVerifyClientCert, pool(f.a.Root)), nil))
				p, err := authz.ParsePattern(apiID)
				if err != nil {
					t.Fatal(err)
				}
				o.Expect = &p
				return o
			},
			want: diagnose.OK, explain: []string{"works"}, fix: []string{"nothing"},
			check: func(t *testing.T, o diagnose.Options, r *diagnose.Report) {
				if !hasStep(r, "server name", true, "SPIFFE ID") {
					t.Errorf("no step explains that the name is not needed: %+v", r.Steps)
				}
			},
		},
		{
			name: "name mismatch/no name, no --expect",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				nameless := f.a.Leaf(t, apiID)
				return f.opts(serveTLS(t, tlsConfig(nameless.TLSCertificate(), tls.VersionTLS12, 0, tls.NoClientCert, nil), nil))
			},
			want: diagnose.NameMismatch, explain: []string{`"127.0.0.1"`, apiID}, fix: []string{"--expect", "SPIFFE ID", "--dns"},
		},
		{
			name: "name mismatch/--server-name asked for with --expect",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				nameless := f.a.Leaf(t, apiID)
				o := f.opts(serveTLS(t, tlsConfig(nameless.TLSCertificate(), tls.VersionTLS12, 0, tls.NoClientCert, nil), nil))
				p, err := authz.ParsePattern(apiID)
				if err != nil {
					t.Fatal(err)
				}
				o.Expect, o.ServerName = &p, "api.internal"
				return o
			},
			want: diagnose.NameMismatch, explain: []string{"api.internal", "no DNS or IP names", apiID}, fix: []string{"drop --server-name"},
		},
		{
			name: "SPIFFE ID mismatch",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				o := f.opts(serveTLS(t, tlsConfig(f.server.TLSCertificate(), tls.VersionTLS12, 0, tls.NoClientCert, nil), nil))
				p, err := authz.ParsePattern(dbID)
				if err != nil {
					t.Fatal(err)
				}
				o.Expect = &p
				return o
			},
			want: diagnose.SPIFFEIDMismatch, explain: []string{apiID, dbID}, fix: []string{"--expect"},
		},
		{
			name: "server certificate without serverAuth",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				clientOnly := issue(t, f.a, apiID, func(x *x509.Certificate) { x.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} })
				return f.opts(serveTLS(t, tlsConfig(clientOnly.TLSCertificate(), tls.VersionTLS12, 0, tls.NoClientCert, nil), nil))
			},
			want: diagnose.ServerWrongUsage, explain: []string{"serverAuth"}, fix: []string{"serverAuth"},
		},
		{
			name: "client certificate revoked (OCSP)",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return revokedSetup(t, true)
			},
			want: diagnose.ClientCertRevoked, explain: []string{"revoked", "serial"}, fix: []string{"enroll again"},
			check: func(t *testing.T, o diagnose.Options, r *diagnose.Report) {
				if !strings.Contains(r.Explanation, pki.FormatSerial(o.ClientChain[0].SerialNumber)) {
					t.Errorf("the explanation does not name the serial %s: %q", pki.FormatSerial(o.ClientChain[0].SerialNumber), r.Explanation)
				}
			},
		},
		{
			name: "OCSP says good",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return revokedSetup(t, false)
			},
			want: diagnose.OK, explain: []string{"works"}, fix: []string{"nothing"},
			check: func(t *testing.T, o diagnose.Options, r *diagnose.Report) {
				if !hasStep(r, "client revocation", true, "good") {
					t.Errorf("no passed revocation step: %+v", r.Steps)
				}
			},
		},
		{
			name: "wrong extended key usage (client certificate serverAuth only)",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				o := f.opts(f.mtlsServer(t, tls.VersionTLS13))
				bad := f.a.Leaf(t, webID, testca.ServerOnly())
				o.ClientChain, o.ClientKey = bad.Chain, bad.Key
				return o
			},
			want: diagnose.ClientWrongUsage, explain: []string{"client authentication"}, fix: []string{"clientAuth"},
		},
		{
			name: "key and certificate not matching",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				o := f.opts(f.mtlsServer(t, tls.VersionTLS13))
				o.ClientKey = f.a.Leaf(t, webID).Key
				return o
			},
			want: diagnose.KeyMismatch, explain: []string{"private key does not match"}, fix: []string{"key.pem"},
		},
		{
			name: "client certificate expired",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				o := f.opts(f.mtlsServer(t, tls.VersionTLS13))
				exp := f.a.Leaf(t, webID, testca.Expired())
				o.ClientChain, o.ClientKey = exp.Chain, exp.Key
				return o
			},
			want: diagnose.ClientCertExpired, explain: []string{"expired", webID}, fix: []string{"renew"},
		},
		{
			name: "identity refused/mutual proxy http mode (403)",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				addr := runProxy(t, f.server, proxy.InboundConfig{Target: httpBackend(t), Protocol: proxy.HTTP}, dbID)
				return f.opts(addr)
			},
			want: diagnose.IdentityRefused, explain: []string{"policy refused", webID, "GET /"}, fix: []string{"rule", "GET /"},
			check: func(t *testing.T, o diagnose.Options, r *diagnose.Report) {
				if !hasStep(r, "server verdict", false, "403") {
					t.Errorf("no step shows the 403: %+v", r.Steps)
				}
			},
		},
		{
			// In tcp mode a mutual proxy refuses an identity its policy does
			// not allow in the handshake (TLS 1.3: an alert right after it).
			// Without a revocation source to ask, a policy refusal and a
			// revocation the proxy knows of look alike: the verdict says so
			// and names the test (issue 23); TestRevocation has the case
			// where the CA says good and the verdict is the policy.
			name: "undecided/mutual proxy tcp mode refuses a valid identity",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.opts(runProxy(t, f.server, proxy.InboundConfig{Target: echoBackend(t)}, dbID))
			},
			want: diagnose.Undecided, explain: []string{"policy", "revoked", webID}, fix: []string{"serial", "--allow"},
			check: candidates(diagnose.IdentityRefused, diagnose.ClientCertRevoked),
		},
		{
			name: "client certificate required/mutual proxy",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.anonymous(runProxy(t, f.server, proxy.InboundConfig{Target: echoBackend(t)}, webID))
			},
			want: diagnose.ClientCertRequired, explain: []string{"requires a client certificate"}, fix: []string{"--identity-dir"},
		},
		{
			name: "ok/crypto/tls mTLS server",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.opts(f.mtlsServer(t, tls.VersionTLS13))
			},
			want: diagnose.OK, explain: []string{"works"}, fix: []string{"nothing"},
			check: func(t *testing.T, o diagnose.Options, r *diagnose.Report) {
				if r.TLSVersion != "TLS 1.3" || len(r.ServerChain) != 2 || len(r.AcceptableCAs) != 1 || !strings.Contains(r.AcceptableCAs[0], "example.org root CA") {
					t.Errorf("report: version %q, chain %d, acceptable %q", r.TLSVersion, len(r.ServerChain), r.AcceptableCAs)
				}
				for _, s := range r.Steps {
					if !s.OK {
						t.Errorf("failed step in an OK report: %+v", s)
					}
				}
			},
		},
		{
			name: "ok/mutual proxy tcp mode",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.opts(runProxy(t, f.server, proxy.InboundConfig{Target: echoBackend(t)}, webID))
			},
			want: diagnose.OK, explain: []string{"works"}, fix: []string{"nothing"},
		},
		{
			name: "ok/mutual proxy http mode --tls12",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.opts(runProxy(t, f.server, proxy.InboundConfig{Target: httpBackend(t), Protocol: proxy.HTTP, TLS12: true}, webID))
			},
			want: diagnose.OK, explain: []string{"works"}, fix: []string{"nothing"},
			check: func(t *testing.T, o diagnose.Options, r *diagnose.Report) {
				if !hasStep(r, "server verdict", true, "HTTP 200") {
					t.Errorf("no HTTP 200 step: %+v", r.Steps)
				}
			},
		},
	}
	for _, v := range versions {
		cs = append(cs,
			corpusCase{
				name: "client certificate required/" + v.name,
				setup: func(t *testing.T, f *fixture) diagnose.Options {
					return f.anonymous(f.mtlsServer(t, v.v))
				},
				want: diagnose.ClientCertRequired, explain: []string{"requires a client certificate"}, fix: []string{"--identity-dir"},
			},
			corpusCase{
				// The server lists other.org's root as the CA it accepts.
				name: "client CA not accepted/" + v.name,
				setup: func(t *testing.T, f *fixture) diagnose.Options {
					return f.opts(serveTLS(t, tlsConfig(f.server.TLSCertificate(), v.v, v.v, tls.RequireAndVerifyClientCert, pool(f.b.Root)), nil))
				},
				want: diagnose.ClientCANotAccepted, explain: []string{"other.org root CA"}, fix: []string{"CA"},
				check: func(t *testing.T, o diagnose.Options, r *diagnose.Report) {
					if len(r.AcceptableCAs) != 1 || !strings.Contains(r.AcceptableCAs[0], "CN=other.org root CA") {
						t.Errorf("AcceptableCAs %q, want other.org's root", r.AcceptableCAs)
					}
				},
			},
			corpusCase{
				// A server whose own check refuses the certificate: crypto/tls
				// sends bad_certificate.
				name: "server refused the client certificate/bad certificate/" + v.name,
				setup: func(t *testing.T, f *fixture) diagnose.Options {
					cfg := tlsConfig(f.server.TLSCertificate(), v.v, v.v, tls.RequireAndVerifyClientCert, pool(f.a.Root))
					cfg.VerifyPeerCertificate = func([][]byte, [][]*x509.Certificate) error { return errRefused }
					return f.opts(serveTLS(t, cfg, nil))
				},
				want: diagnose.Undecided, explain: []string{"bad certificate", "policy", "revoked"}, fix: []string{"serial"},
				check: candidates(diagnose.IdentityRefused, diagnose.ClientCertRevoked),
			},
			corpusCase{
				// The server's clock runs two hours ahead: to crypto/tls the
				// one-hour client certificate has expired, and it sends
				// expired_certificate; locally the certificate is valid.
				name: "server refused the client certificate/expired alert/" + v.name,
				setup: func(t *testing.T, f *fixture) diagnose.Options {
					cfg := tlsConfig(f.server.TLSCertificate(), v.v, v.v, tls.RequireAndVerifyClientCert, pool(f.a.Root))
					cfg.Time = func() time.Time { return time.Now().Add(2 * time.Hour) }
					return f.opts(serveTLS(t, cfg, nil))
				},
				want: diagnose.ClockSkew, explain: []string{"expired", "valid from", "server's clock is at least"}, fix: []string{"NTP on the server"},
			},
			corpusCase{
				// A server that lists no CA names and does not trust a (it
				// verifies against the system's roots): it answers
				// unknown_ca.
				name: "server refused the client certificate/unknown CA alert/" + v.name,
				setup: func(t *testing.T, f *fixture) diagnose.Options {
					return f.opts(serveTLS(t, tlsConfig(f.server.TLSCertificate(), v.v, v.v, tls.RequireAndVerifyClientCert, nil), nil))
				},
				want: diagnose.ClientCANotAccepted, explain: []string{"does not trust"}, fix: []string{"CA"},
			},
		)
	}
	// Alerts crypto/tls cannot send for a client certificate, as other
	// servers send them (TLS 1.2, where the alert is in plaintext and can be
	// rewritten on the wire).
	for _, a := range []struct {
		name    string
		alert   byte
		want    diagnose.Class
		explain string
	}{
		{"revoked", 44, diagnose.ClientCertRevoked, "revoked"},
		{"access denied", 49, diagnose.IdentityRefused, "denies"},
		{"unsupported certificate", 43, diagnose.ClientCertRefused, "unsupported certificate"},
		{"certificate unknown", 46, diagnose.ClientCertRefused, "unknown certificate"},
	} {
		cs = append(cs, corpusCase{
			name: "server refused the client certificate/" + a.name + " alert/TLS1.2",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				cfg := tlsConfig(f.server.TLSCertificate(), tls.VersionTLS12, tls.VersionTLS12, tls.RequireAndVerifyClientCert, pool(f.a.Root))
				cfg.VerifyPeerCertificate = func([][]byte, [][]*x509.Certificate) error { return errRefused }
				return f.opts(serveTLS(t, cfg, func(c net.Conn) net.Conn { return alertRewriter{Conn: c, to: a.alert} }))
			},
			want: a.want, explain: []string{a.explain},
		})
	}
	return cs
}

type refusedError struct{}

func (refusedError) Error() string { return "refused by the test server" }

var errRefused = refusedError{}

// candidates checks the causes an Undecided verdict lists.
func candidates(want ...diagnose.Class) func(t *testing.T, o diagnose.Options, r *diagnose.Report) {
	return func(t *testing.T, o diagnose.Options, r *diagnose.Report) {
		if fmt.Sprint(r.Candidates) != fmt.Sprint(want) {
			t.Errorf("candidates %v, want %v", r.Candidates, want)
		}
	}
}

func explainsAddr(t *testing.T, o diagnose.Options, r *diagnose.Report) {
	if !strings.Contains(r.Explanation, o.Addr) {
		t.Errorf("the explanation does not name %s: %q", o.Addr, r.Explanation)
	}
}

func hasStep(r *diagnose.Report, name string, ok bool, detail string) bool {
	for _, s := range r.Steps {
		if s.Name == name && s.OK == ok && strings.Contains(s.Detail, detail) {
			return true
		}
	}
	return false
}

// TestCorpus builds one broken setup per failure class and checks that
// diagnose names it: the exact class, an explanation and a fix that name
// the thing that is wrong.
func TestCorpus(t *testing.T) {
	runCorpus(t, newFixture(t), corpus())
}

// runCorpus diagnoses each case's setup and checks the verdict, the words
// of its explanation and fix, and that a failure has a failed step.
func runCorpus(t *testing.T, f *fixture, cases []corpusCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			o := c.setup(t, f)
			r := diagnose.Run(context.Background(), o)
			var text strings.Builder
			r.WriteText(&text)
			if r.Verdict != c.want {
				t.Fatalf("verdict %s, want %s\n%s", r.Verdict, c.want, text.String())
			}
			if r.Explanation == "" || r.Fix == "" {
				t.Fatalf("empty explanation or fix\n%s", text.String())
			}
			for _, w := range c.explain {
				if !strings.Contains(strings.ToLower(r.Explanation), strings.ToLower(w)) {
					t.Errorf("the explanation does not say %q: %q", w, r.Explanation)
				}
			}
			for _, w := range c.fix {
				if !strings.Contains(strings.ToLower(r.Fix), strings.ToLower(w)) {
					t.Errorf("the fix does not say %q: %q", w, r.Fix)
				}
			}
			if r.Verdict != diagnose.OK && !hasFailedStep(r) {
				t.Errorf("a failure verdict without a failed step\n%s", text.String())
			}
			if r.Target != o.Addr {
				t.Errorf("target %q, want %q", r.Target, o.Addr)
			}
			if c.check != nil {
				c.check(t, o, r)
			}
			if t.Failed() {
				t.Logf("report:\n%s", text.String())
			}
		})
	}
}

func hasFailedStep(r *diagnose.Report) bool {
	for _, s := range r.Steps {
		if !s.OK {
			return true
		}
	}
	return false
}

// TestProbeIsLabelled: the unverified probe says so in the report.
func TestProbeIsLabelled(t *testing.T) {
	f := newFixture(t)
	r := diagnose.Run(context.Background(), f.opts(f.mtlsServer(t, tls.VersionTLS13)))
	if r.Verdict != diagnose.OK {
		t.Fatalf("verdict %s: %s", r.Verdict, r.Explanation)
	}
	if !hasStep(r, "tls", true, "probe without verification, for diagnosis only") {
		t.Fatalf("the probe handshake is not labelled: %+v", r.Steps)
	}
}

// revokedSetup runs a real CA service (with plain-HTTP OCSP, so that its
// certificates name a responder), enrolls webID through a join token,
// revokes the certificate when revoke is set, and returns the options to
// diagnose a server that trusts the CA but checks no revocation itself.
func revokedSetup(t *testing.T, revoke bool) diagnose.Options {
	t.Helper()
	c := testca.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := caservice.Open(ctx, caservice.Options{Dir: c.Dir, Passphrase: []byte(testca.Passphrase), Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0"})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var admin *client.Client
	t.Cleanup(func() {
		if admin != nil {
			admin.CloseIdleConnections()
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("CA service: %v", err)
		}
		svc.Close()
	})
	adminID, err := identity.Load(c.AdminDir)
	if err != nil {
		t.Fatal(err)
	}
	tc := adminID.TLSCertificate()
	if admin, err = client.New([]string{svc.URL}, adminID.Roots, &tc); err != nil {
		t.Fatal(err)
	}
	tok, err := admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: webID})
	if err != nil {
		t.Fatal(err)
	}
	enr, err := client.RequestIdentity(ctx, tok.Token, pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf := enr.Identity.Leaf()
	if len(leaf.OCSPServer) == 0 || !strings.HasPrefix(leaf.OCSPServer[0], "http://"+svc.HTTPAddr().String()) {
		t.Fatalf("the enrolled certificate names OCSP %v, want the CA's http listener %s", leaf.OCSPServer, svc.HTTPAddr())
	}
	if revoke {
		if _, err := admin.Revoke(ctx, api.RevokeRequest{Serial: pki.FormatSerial(leaf.SerialNumber), Reason: "keyCompromise"}); err != nil {
			t.Fatal(err)
		}
	}
	srv := c.Leaf(t, apiID, testca.IP("127.0.0.1"))
	addr := serveTLS(t, tlsConfig(srv.TLSCertificate(), tls.VersionTLS13, 0, tls.RequireAndVerifyClientCert, pool(c.Root)), nil)
	roots := []*x509.Certificate{c.Root}
	return diagnose.Options{Addr: addr, Roots: roots, ClientChain: enr.Identity.Chain, ClientKey: enr.Identity.Key}
}
