package diagnose_test

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/diagnose"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testca"
)

// The tests of this file follow the classes of issue 23, one test per
// class, each case a real server on 127.0.0.1 set up broken in one way.

// withClient replaces o's client identity.
func withClient(o diagnose.Options, id *identity.Identity) diagnose.Options {
	o.ClientChain, o.ClientKey = id.Chain, id.Key
	return o
}

// chainCert is a TLS certificate that sends exactly chain, signed with key.
func chainCert(key any, chain ...*x509.Certificate) tls.Certificate {
	c := tls.Certificate{PrivateKey: key}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// serveHTTPS runs h behind crypto/tls configured by cfg.
func serveHTTPS(t testing.TB, cfg *tls.Config, h http.Handler) string {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	s.TLS = cfg
	s.StartTLS()
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// expiredIntermediate is a copy of ca's intermediate (same name and key)
// that expired a day ago, signed by ca's root.
func expiredIntermediate(t testing.TB, ca *testca.CA) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ca.Dir, pki.RootKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	rootKey, err := pki.ParsePrivateKey(b, []byte(testca.Passphrase))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := *ca.Intermediate
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca.Root, ca.Issuer.Key.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRevocation: class 1. Each certificate names a real CRL or OCSP
// responder of its CA (or carries a stapled answer).
func TestRevocation(t *testing.T) {
	runCorpus(t, newFixture(t), revocationCases())
}

func revocationCases() []corpusCase {
	serverWith := func(t *testing.T, f *fixture, id *identity.Identity, staple []byte) diagnose.Options {
		cert := id.TLSCertificate()
		cert.OCSPStaple = staple
		return f.opts(serveTLS(t, tlsConfig(cert, tls.VersionTLS12, 0, tls.RequireAndVerifyClientCert, pool(f.a.Root)), nil))
	}
	return []corpusCase{
		{
			name: "server revoked by CRL",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				rsp := newResponder(t, f.a)
				srv := rsp.leaf(t, apiID, true, "")
				rsp.revoke(srv.Leaf())
				return serverWith(t, f, srv, nil)
			},
			want: diagnose.ServerCertRevoked, explain: []string{"revoked", "CRL", "keyCompromise"}, fix: []string{"new certificate"},
		},
		{
			name: "server revoked by OCSP",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				rsp := newResponder(t, f.a)
				srv := rsp.leaf(t, apiID, false, rsp.url+"/ocsp")
				rsp.revoke(srv.Leaf())
				return serverWith(t, f, srv, nil)
			},
			want: diagnose.ServerCertRevoked, explain: []string{"revoked", "OCSP responder"}, fix: []string{"new certificate"},
		},
		{
			name: "server revoked by its stapled answer",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				rsp := newResponder(t, f.a)
				srv := rsp.leaf(t, apiID, false, "")
				rsp.revoke(srv.Leaf())
				return serverWith(t, f, srv, rsp.staple(t, srv))
			},
			want: diagnose.ServerCertRevoked, explain: []string{"revoked", "stapled"}, fix: []string{"new certificate"},
		},
		{
			name: "ok/server good by CRL, OCSP and staple",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				rsp := newResponder(t, f.a)
				srv := rsp.leaf(t, apiID, true, rsp.url+"/ocsp")
				return serverWith(t, f, srv, rsp.staple(t, srv))
			},
			want: diagnose.OK, explain: []string{"works"}, fix: []string{"nothing"},
			check: func(t *testing.T, o diagnose.Options, r *diagnose.Report) {
				for _, w := range []string{"stapled OCSP answer says good", "/ocsp says good", "does not list it"} {
					if !hasStep(r, "server revocation", true, w) {
						t.Errorf("no revocation step says %q: %+v", w, r.Steps)
					}
				}
			},
		},
		{
			name: "stale CRL",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				rsp := newResponder(t, f.a)
				rsp.crlNextUpdate = time.Now().Add(-2 * time.Hour)
				return serverWith(t, f, rsp.leaf(t, apiID, true, ""), nil)
			},
			want: diagnose.RevocationUnavailable, explain: []string{"stale", "fail closed", "fail open"}, fix: []string{"CRL"},
		},
		{
			name: "server's OCSP responder down",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				rsp := newResponder(t, f.a)
				return serverWith(t, f, rsp.leaf(t, apiID, false, "http://"+closedPort(t)+"/ocsp"), nil)
			},
			want: diagnose.RevocationUnavailable, explain: []string{"unreachable", "fail closed"}, fix: []string{"OCSP"},
		},
		{
			name: "client revoked by CRL",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				rsp := newResponder(t, f.a)
				client := rsp.leaf(t, webID, true, "")
				rsp.revoke(client.Leaf())
				return withClient(f.opts(f.mtlsServer(t, tls.VersionTLS13)), client)
			},
			want: diagnose.ClientCertRevoked, explain: []string{"revoked", "CRL", "serial"}, fix: []string{"enroll again"},
		},
		{
			// The server refuses a client whose OCSP responder is down: it
			// fails closed, and that is the cause named.
			name: "client's OCSP responder down, server fails closed",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				client := newResponder(t, f.a).leaf(t, webID, false, "http://"+closedPort(t)+"/ocsp")
				cfg := tlsConfig(f.server.TLSCertificate(), tls.VersionTLS13, 0, tls.RequireAndVerifyClientCert, pool(f.a.Root))
				cfg.VerifyPeerCertificate = func([][]byte, [][]*x509.Certificate) error { return errRefused }
				return withClient(f.opts(serveTLS(t, cfg, nil)), client)
			},
			want: diagnose.RevocationUnavailable, explain: []string{"unreachable", "fails closed"}, fix: []string{"OCSP"},
		},
		{
			name: "ok/client's OCSP responder down, server fails open",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				client := newResponder(t, f.a).leaf(t, webID, false, "http://"+closedPort(t)+"/ocsp")
				return withClient(f.opts(f.mtlsServer(t, tls.VersionTLS13)), client)
			},
			want: diagnose.OK, explain: []string{"works"}, fix: []string{"nothing"},
			check: func(t *testing.T, o diagnose.Options, r *diagnose.Report) {
				if !hasStep(r, "client revocation", true, "fails open") {
					t.Errorf("no step says the server fails open: %+v", r.Steps)
				}
			},
		},
		{
			// With the CA saying good, a mutual proxy's refusal in the
			// handshake is its policy (class 5, tcp mode).
			name: "client good by CRL, refused by a mutual proxy's policy (tcp)",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				client := newResponder(t, f.a).leaf(t, webID, true, "")
				return withClient(f.opts(runProxy(t, f.server, proxy.InboundConfig{Target: echoBackend(t)}, dbID)), client)
			},
			want: diagnose.IdentityRefused, explain: []string{"not revoked", "policy", webID}, fix: []string{"--allow"},
		},
		{
			name: "OCSP answer from this machine's future",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				rsp := newResponder(t, f.a)
				rsp.ocspThisUpdate = time.Now().Add(2 * time.Hour)
				return serverWith(t, f, rsp.leaf(t, apiID, false, rsp.url+"/ocsp"), nil)
			},
			want: diagnose.ClockSkew, explain: []string{"future"}, fix: []string{"NTP"},
		},
	}
}

// TestTrust: class 2, on both sides.
func TestTrust(t *testing.T) {
	runCorpus(t, newFixture(t), trustCases())
}

func trustCases() []corpusCase {
	return []corpusCase{
		{
			name: "client of a foreign trust domain refused by a mutual proxy",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				o := f.opts(runProxy(t, f.server, proxy.InboundConfig{Target: echoBackend(t)}, "spiffe://other.org/ns/prod/web"))
				return withClient(o, f.b.Leaf(t, "spiffe://other.org/ns/prod/web"))
			},
			want: diagnose.ForeignTrustDomain, explain: []string{"example.org", "other.org"}, fix: []string{"federat", "other.org"},
		},
		{
			name: "server not in the bundle: the server's trust domain is the client's, the bundle holds another root",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				o := f.opts(f.mtlsServer(t, tls.VersionTLS13))
				o.Roots = []*x509.Certificate{f.b.Root}
				return o
			},
			want: diagnose.BundleMissingRoot, explain: []string{"example.org root CA", "own trust domain"}, fix: []string{"bundle"},
		},
		{
			// A CA made anew for example.org: same root name, another key.
			name: "root rotated on the server's side only",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				rotated := testca.New(t).Leaf(t, apiID, testca.IP("127.0.0.1"))
				return f.opts(serveTLS(t, tlsConfig(rotated.TLSCertificate(), tls.VersionTLS13, 0, tls.RequireAndVerifyClientCert, pool(f.a.Root)), nil))
			},
			want: diagnose.RootRotated, explain: []string{"rotated on one side", "example.org root CA"}, fix: []string{"bundle"},
		},
		{
			name: "leaf outside its intermediate's name constraints",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				key, err := pki.GenerateKey(pki.KeyECDSAP256, nil)
				if err != nil {
					t.Fatal(err)
				}
				serial, _ := pki.NewSerial(nil)
				u := spiffeid.RequireFromString(otherID).URL()
				tmpl := &x509.Certificate{SerialNumber: serial, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
					KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
					URIs: []*url.URL{u}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
				der, err := x509.CreateCertificate(rand.Reader, tmpl, f.a.Intermediate, key.Public(), f.a.Issuer.Key)
				if err != nil {
					t.Fatal(err)
				}
				leaf, _ := x509.ParseCertificate(der)
				return f.opts(serveTLS(t, tlsConfig(chainCert(key, leaf, f.a.Intermediate), tls.VersionTLS13, 0, tls.NoClientCert, nil), nil))
			},
			want: diagnose.NameConstraints, explain: []string{otherID, "example.org intermediate CA", "permitted: example.org"}, fix: []string{"trust domain"},
		},
		{
			name: "server's intermediate expired",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				cert := chainCert(f.server.Key, f.server.Leaf(), expiredIntermediate(t, f.a))
				return f.opts(serveTLS(t, tlsConfig(cert, tls.VersionTLS13, 0, tls.RequireAndVerifyClientCert, pool(f.a.Root)), nil))
			},
			want: diagnose.IntermediateExpired, explain: []string{"intermediate", "expired", apiID}, fix: []string{"rotate"},
		},
		{
			name: "client's intermediate expired",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				o := f.opts(f.mtlsServer(t, tls.VersionTLS13))
				o.ClientChain = []*x509.Certificate{f.client.Leaf(), expiredIntermediate(t, f.a)}
				return o
			},
			want: diagnose.IntermediateExpired, explain: []string{"intermediate", "client"}, fix: []string{"rotate"},
		},
		{
			// The first certificate sent is the intermediate: the server's
			// signature cannot verify with it, which the probe reports; the
			// verdict names the order.
			name: "server chain in the wrong order",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				cert := chainCert(f.server.Key, f.a.Intermediate, f.server.Leaf())
				return f.opts(serveTLS(t, tlsConfig(cert, tls.VersionTLS13, 0, tls.RequireAndVerifyClientCert, pool(f.a.Root)), nil))
			},
			want: diagnose.ChainMisordered, explain: []string{"wrong order", apiID}, fix: []string{"leaf first"},
		},
		{
			name: "server chain with an unrelated certificate",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				cert := chainCert(f.server.Key, f.server.Leaf(), f.b.Intermediate, f.a.Intermediate)
				return f.opts(serveTLS(t, tlsConfig(cert, tls.VersionTLS13, 0, tls.RequireAndVerifyClientCert, pool(f.a.Root)), nil))
			},
			want: diagnose.ChainMisordered, explain: []string{"unrelated", "other.org intermediate CA"}, fix: []string{"nothing else"},
		},
		{
			name: "client chain with an unrelated certificate",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				o := f.opts(f.mtlsServer(t, tls.VersionTLS13))
				o.ClientChain = []*x509.Certificate{f.client.Leaf(), f.b.Intermediate, f.a.Intermediate}
				return o
			},
			want: diagnose.ChainMisordered, explain: []string{"client", "other.org intermediate CA"}, fix: []string{"leaf then its intermediate"},
		},
		{
			// Issue 23: was "its CA is not accepted, change CAs".
			name: "client leaf without its intermediate, server lists its CAs",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				o := f.opts(f.mtlsServer(t, tls.VersionTLS13))
				o.ClientChain = o.ClientChain[:1]
				return o
			},
			want: diagnose.ClientMissingIntermediate, explain: []string{"without its intermediate", "example.org intermediate CA"}, fix: []string{"full chain", "the CA itself is fine"},
		},
		{
			name: "server of a CA that is not SPIFFE at all",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				s := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
				t.Cleanup(s.Close)
				return f.anonymous(s.Listener.Addr().String())
			},
			want: diagnose.ServerUnknownCA, explain: []string{"does not trust", "--server-name"}, fix: []string{"bundle"},
		},
	}
}

// sniServer presents byName for SNI name and other otherwise.
func sniServer(t testing.TB, name string, byName, other tls.Certificate) string {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if h.ServerName == name {
			return &byName, nil
		}
		return &other, nil
	}}
	return serveTLS(t, cfg, nil)
}

// TestNames: class 3 (DNS/IP names and --expect are in TestCorpus).
func TestNames(t *testing.T) {
	if names, _ := net.LookupAddr("127.0.0.1"); !slices.Contains(names, "localhost") && !slices.Contains(names, "localhost.") {
		t.Skipf("127.0.0.1 does not resolve back to localhost here (%v)", names)
	}
	runCorpus(t, newFixture(t), []corpusCase{
		{
			// Reached by address, no SNI is sent; the name the address
			// resolves back to gets the right certificate.
			name: "certificate chosen by SNI, reached by address",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				foreign := f.b.Leaf(t, otherID, testca.IP("127.0.0.1"))
				return f.anonymous(sniServer(t, "localhost", f.server.TLSCertificate(), foreign.TLSCertificate()))
			},
			want: diagnose.SNICertificate, explain: []string{"without a server name", `"localhost"`, "other.org root CA", apiID}, fix: []string{"localhost"},
		},
		{
			name: "certificate chosen by SNI, the name gets the wrong one",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				foreign := f.b.Leaf(t, otherID, testca.DNS("localhost"))
				_, port, _ := net.SplitHostPort(sniServer(t, "localhost", foreign.TLSCertificate(), f.server.TLSCertificate()))
				return f.anonymous(net.JoinHostPort("localhost", port))
			},
			want: diagnose.SNICertificate, explain: []string{`with the server name (SNI) "localhost"`, "without a server name"}, fix: []string{"default"},
		},
		{
			name: "ok/certificate chosen by SNI, reached by name",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				foreign := f.b.Leaf(t, otherID, testca.IP("127.0.0.1"))
				_, port, _ := net.SplitHostPort(sniServer(t, "localhost", f.server.TLSCertificate(), foreign.TLSCertificate()))
				return f.anonymous(net.JoinHostPort("localhost", port))
			},
			want: diagnose.OK, explain: []string{"works"}, fix: []string{"nothing"},
			check: func(t *testing.T, o diagnose.Options, r *diagnose.Report) {
				if !hasStep(r, "server name indication", true, "without SNI it presents "+otherID) {
					t.Errorf("no step compares with and without SNI: %+v", r.Steps)
				}
			},
		},
	})
}

// TestMutualTLS: class 4 (an accepted-CA list that excludes the client's
// CA is in TestCorpus).
func TestMutualTLS(t *testing.T) {
	runCorpus(t, newFixture(t), mutualTLSCases())
}

func mutualTLSCases() []corpusCase {
	return []corpusCase{
		{
			name: "server never asks for a client certificate",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.opts(serveTLS(t, tlsConfig(f.server.TLSCertificate(), tls.VersionTLS13, 0, tls.NoClientCert, nil), nil))
			},
			want: diagnose.ClientCertNotRequested, explain: []string{"never asks", "one-way"}, fix: []string{"require"},
		},
		{
			name: "server requests but does not require",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.opts(serveTLS(t, tlsConfig(f.server.TLSCertificate(), tls.VersionTLS13, 0, tls.VerifyClientCertIfGiven, pool(f.a.Root)), nil))
			},
			want: diagnose.ClientCertOptional, explain: []string{"does not require"}, fix: []string{"RequireAndVerifyClientCert"},
		},
		{
			name: "server requests but does not require/anonymous client",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.anonymous(serveTLS(t, tlsConfig(f.server.TLSCertificate(), tls.VersionTLS12, 0, tls.VerifyClientCertIfGiven, pool(f.a.Root)), nil))
			},
			want: diagnose.ClientCertOptional, explain: []string{"does not require"}, fix: []string{"ssl_verify_client on"},
		},
		{
			name: "mutual proxy in permissive mode/tcp",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.opts(runProxy(t, f.server, proxy.InboundConfig{Target: echoBackend(t), Mode: proxy.Permissive}, webID))
			},
			want: diagnose.PermissiveMode, explain: []string{"permissive", "plaintext"}, fix: []string{"--mode strict"},
		},
		{
			name: "mutual proxy in permissive mode/http",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.opts(runProxy(t, f.server, proxy.InboundConfig{Target: httpBackend(t), Protocol: proxy.HTTP, Mode: proxy.Permissive}, webID))
			},
			want: diagnose.PermissiveMode, explain: []string{"permissive"}, fix: []string{"--mode strict"},
		},
	}
}

// TestAuthorization: class 5 (tcp mode: TestRevocation's policy case).
func TestAuthorization(t *testing.T) {
	runCorpus(t, newFixture(t), authorizationCases())
}

func authorizationCases() []corpusCase {
	refuseWith := func(status int, auth, body string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if auth != "" {
				w.Header().Set("WWW-Authenticate", auth)
			}
			http.Error(w, body, status)
		})
	}
	publicOnly := func(t *testing.T, f *fixture) string {
		pat, err := authz.ParsePattern(webID)
		if err != nil {
			t.Fatal(err)
		}
		pol := &authz.Policy{Rules: []authz.Rule{{IDs: []authz.Pattern{pat}, Methods: []string{"GET"}, Paths: []string{"/public/"}}}}
		return runProxyPolicy(t, f.server, proxy.InboundConfig{Target: httpBackend(t), Protocol: proxy.HTTP}, pol)
	}
	return []corpusCase{
		{
			name: "mutual proxy policy refuses the method and path",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				o := f.opts(publicOnly(t, f))
				o.Method, o.Path = "POST", "/admin/users"
				return o
			},
			want: diagnose.IdentityRefused, explain: []string{webID, "POST /admin/users", "policy"}, fix: []string{"POST /admin/users", "rule"},
		},
		{
			name: "ok/mutual proxy policy allows the method and path",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				o := f.opts(publicOnly(t, f))
				o.Path = "/public/index.html"
				return o
			},
			want: diagnose.OK, explain: []string{"works"}, fix: []string{"nothing"},
		},
		{
			name: "non-mutual server answers 403 after the handshake",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				cfg := tlsConfig(f.server.TLSCertificate(), tls.VersionTLS12, 0, tls.RequireAndVerifyClientCert, pool(f.a.Root))
				return f.opts(serveHTTPS(t, cfg, refuseWith(http.StatusForbidden, "", "not on the list")))
			},
			want: diagnose.IdentityRefused, explain: []string{"refused its identity", "not on the list"}, fix: []string{"allow"},
		},
		{
			name: "non-mutual server answers 401 after the handshake",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				cfg := tlsConfig(f.server.TLSCertificate(), tls.VersionTLS12, 0, tls.RequireAndVerifyClientCert, pool(f.a.Root))
				return f.opts(serveHTTPS(t, cfg, refuseWith(http.StatusUnauthorized, `Bearer realm="api"`, "token required")))
			},
			want: diagnose.HTTPUnauthorized, explain: []string{"401", "Bearer"}, fix: []string{"token"},
		},
	}
}

// TestTime: class 6 (the server's clock ahead of the client certificate
// is in TestCorpus, an OCSP answer from the future in TestRevocation).
func TestTime(t *testing.T) {
	runCorpus(t, newFixture(t), timeCases())
}

func timeCases() []corpusCase {
	// A server certificate issued by a CA whose clock, like the server's,
	// runs two hours ahead of this machine.
	ahead := func(t *testing.T, f *fixture, date time.Time) diagnose.Options {
		key, err := pki.GenerateKey(pki.KeyECDSAP256, nil)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := f.a.Issuer.Issue(pki.Leaf{ID: spiffeid.RequireFromString(apiID), PublicKey: key.Public(), TTL: time.Hour, Now: time.Now().Add(2 * time.Hour),
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
		if err != nil {
			t.Fatal(err)
		}
		cfg := tlsConfig(chainCert(key, cert, f.a.Intermediate), tls.VersionTLS12, 0, tls.NoClientCert, nil)
		return f.opts(serveHTTPS(t, cfg, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Date", date.UTC().Format(http.TimeFormat))
		})))
	}
	return []corpusCase{
		{
			name: "this machine's clock behind the server's and the CA's",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return ahead(t, f, time.Now().Add(2*time.Hour))
			},
			want: diagnose.ClockSkew, explain: []string{"this machine's clock is about", "behind", "Date header"}, fix: []string{"NTP"},
			check: func(t *testing.T, o diagnose.Options, r *diagnose.Report) {
				if !hasStep(r, "clock", false, "ahead of this machine") {
					t.Errorf("no clock step with the evidence: %+v", r.Steps)
				}
			},
		},
		{
			name: "certificate issued for later: the server's clock agrees with this machine's",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return ahead(t, f, time.Now())
			},
			want: diagnose.ServerNotYetValid, explain: []string{"also by the server's own clock"}, fix: []string{"CA's clock"},
		},
	}
}

// TestProtocol: class 7 (versions and suites are in TestCorpus).
func TestProtocol(t *testing.T) {
	runCorpus(t, newFixture(t), protocolCases())
}

func protocolCases() []corpusCase {
	// lb is a TLS-terminating load balancer that asks for no client
	// certificate, in front of a service that wants one.
	lb := func(t *testing.T, f *fixture, body string) string {
		backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Client-Cert") == "" {
				http.Error(w, body, http.StatusForbidden)
			}
		}))
		t.Cleanup(backend.Close)
		u, _ := url.Parse(backend.URL)
		cfg := tlsConfig(f.server.TLSCertificate(), tls.VersionTLS12, 0, tls.NoClientCert, nil)
		return serveHTTPS(t, cfg, httputil.NewSingleHostReverseProxy(u))
	}
	return []corpusCase{
		{
			name: "h2-only server, client offers http/1.1",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				cfg := tlsConfig(f.server.TLSCertificate(), tls.VersionTLS12, 0, tls.RequireAndVerifyClientCert, pool(f.a.Root))
				o := f.opts(h2OnlyServer(t, cfg))
				o.ALPN = []string{"http/1.1"}
				return o
			},
			want: diagnose.ALPNMismatch, explain: []string{"http/1.1", "HTTP/2 only"}, fix: []string{"HTTP/2 client"},
		},
		{
			name: "load balancer drops the client certificate",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.opts(lb(t, f, "no client certificate presented"))
			},
			want: diagnose.ClientCertDropped, explain: []string{"load balancer", "never asks"}, fix: []string{"ssl_verify_client on", "pass TLS through"},
		},
		{
			// A bare 403 and no certificate request: the service's own
			// refusal or a balancer dropping the certificate.
			name: "403 without a certificate request: undecided",
			setup: func(t *testing.T, f *fixture) diagnose.Options {
				return f.opts(lb(t, f, "forbidden"))
			},
			want: diagnose.Undecided, explain: []string{"never asked", "load balancer"}, fix: []string{"bypassing the load balancer"},
			check: candidates(diagnose.ClientCertDropped, diagnose.IdentityRefused),
		},
	}
}

// TestLocalFiles: class 8, the client identity read from files.
func TestLocalFiles(t *testing.T) {
	f := newFixture(t)
	addr := f.mtlsServer(t, tls.VersionTLS13)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	certPEM := pki.EncodeCertificates(f.client.Chain...)
	cert := write("cert.pem", certPEM)
	keyDER, err := pki.MarshalPrivateKey(f.client.Key, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	key := write("key.pem", keyDER)
	bundle := write("bundle.pem", pki.EncodeCertificates(f.a.Root))
	encrypted, err := pki.MarshalPrivateKey(f.client.Key, []byte("secret"), 1000)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := pki.GenerateKey(pki.KeyRSA3072, nil)
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM, err := pki.MarshalPrivateKey(rsaKey, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	garbled := append([]byte(nil), certPEM...)
	copy(garbled[len("-----BEGIN CERTIFICATE-----\n")+10:], "#!garbage!#")
	files := func(c, k string) diagnose.Options {
		return diagnose.Options{Addr: addr, Files: diagnose.Files{Cert: c, Key: k, Bundle: bundle}}
	}
	cases := []corpusCase{
		{
			name:  "ok/PEM files",
			setup: func(*testing.T, *fixture) diagnose.Options { return files(cert, key) },
			want:  diagnose.OK, explain: []string{"works"}, fix: []string{"nothing"},
		},
		{
			name:  "encrypted key without passphrase",
			setup: func(*testing.T, *fixture) diagnose.Options { return files(cert, write("enc.pem", encrypted)) },
			want:  diagnose.KeyEncrypted, explain: []string{"enc.pem", "encrypted"}, fix: []string{"openssl pkey"},
		},
		{
			name:  "key of another type",
			setup: func(*testing.T, *fixture) diagnose.Options { return files(cert, write("rsa.pem", rsaPEM)) },
			want:  diagnose.KeyMismatch, explain: []string{"RSA", "ECDSA P-256"}, fix: []string{"key.pem"},
		},
		{
			name:  "PEM with garbage",
			setup: func(*testing.T, *fixture) diagnose.Options { return files(write("garbled.pem", garbled), key) },
			want:  diagnose.NotPEM, explain: []string{"garbled.pem", "damaged"}, fix: []string{"write the file again"},
		},
		{
			name:  "DER where PEM was expected",
			setup: func(*testing.T, *fixture) diagnose.Options { return files(write("cert.der", f.client.Leaf().Raw), key) },
			want:  diagnose.NotPEM, explain: []string{"DER"}, fix: []string{"openssl x509 -inform der"},
		},
	}
	if _, err := os.Stat("/usr/bin/openssl"); err == nil {
		cases = append(cases, corpusCase{
			name: "PKCS#12 where PEM was expected",
			setup: func(t *testing.T, _ *fixture) diagnose.Options {
				p12 := filepath.Join(dir, "id.p12")
				runOpenSSL(t, "pkcs12", "-export", "-in", cert, "-inkey", key, "-passout", "pass:x", "-out", p12)
				return files(p12, key)
			},
			want: diagnose.PKCS12NotPEM, explain: []string{"id.p12", "PKCS#12"}, fix: []string{"openssl pkcs12", "-nokeys"},
		})
	}
	runCorpus(t, f, cases)
}

func runOpenSSL(t *testing.T, args ...string) {
	t.Helper()
	out, err := execCommand("openssl", args...)
	if err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, out)
	}
}

// h2OnlyServer serves HTTP/2 only, as gRPC servers do: crypto/tls lets a
// client that offers http/1.1 complete the handshake without ALPN, and the
// server then drops any connection that did not agree on h2.
func h2OnlyServer(t testing.TB, cfg *tls.Config) string {
	cfg.NextProtos = []string{"h2"}
	return serveTCP(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err != nil || tc.ConnectionState().NegotiatedProtocol != "h2" {
			return
		}
		(&http2.Server{}).ServeConn(tc, &http2.ServeConnOpts{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})})
	})
}
