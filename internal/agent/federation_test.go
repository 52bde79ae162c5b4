package agent_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/agent"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// TestWorkloadFederatedBundles: once the CA federates with another trust
// domain, go-spiffe clients of the agent see that domain's bundle in the
// X.509 SVID responses (X509Source) and in FetchX509Bundles, beside their
// own.
func TestWorkloadFederatedBundles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := testenv.StartCA(t, testenv.Options{})
	partner := testca.New(t, testca.WithTrustDomain("partner.example"))
	// The endpoint is unreachable: the bundle exchanged out of band is the
	// one held, and the one handed out.
	if _, err := e.Admin.AddFederation(ctx, api.FederationRequest{TrustDomain: "partner.example", EndpointURL: "https://127.0.0.1:1/bundle",
		Profile: "https_web", Bundle: string(pki.EncodeCertificates(partner.Root))}); err != nil {
		t.Fatal(err)
	}
	id := td + "/ns/test/web"
	entry(t, e, id, td+"/node/n1", time.Minute, nil, fmt.Sprintf("unix:uid:%d", os.Getuid()))
	ra := nodeAgent(t, e, "n1", nil)
	src := source(t, ra.sock, id)
	ptd := spiffeid.RequireTrustDomainFromString("partner.example")
	testwait.EventuallyNil(t, func() error {
		b, err := src.GetX509BundleForTrustDomain(ptd)
		if err != nil {
			return err
		}
		if auths := b.X509Authorities(); len(auths) != 1 || !auths[0].Equal(partner.Root) {
			return fmt.Errorf("partner bundle holds %d authorities, want the partner's root", len(auths))
		}
		return nil
	}, "the partner's bundle in the X509Source")
	set, err := workloadapi.FetchX509Bundles(ctx, addr(ra.sock))
	if err != nil {
		t.Fatal(err)
	}
	if b, ok := set.Get(ptd); !ok || !b.HasX509Authority(partner.Root) {
		t.Errorf("FetchX509Bundles has no partner.example bundle with its root (%v)", set.Bundles())
	}
	if b, ok := set.Get(spiffeid.RequireTrustDomainFromString("example.org")); !ok || !b.HasX509Authority(e.CA.Root) {
		t.Error("FetchX509Bundles lost the node's own bundle")
	}
}

// partnerWithJWT is a partner trust domain whose SPIFFE bundle carries an
// X.509 root and a JWT authority (key ID "p1"), added to e's federations
// with the endpoint unreachable (the bundle exchanged out of band is held).
type partnerWithJWT struct {
	ca  *testca.CA
	key *ecdsa.PrivateKey
}

func federateWithJWT(t *testing.T, e *testenv.CA) *partnerWithJWT {
	t.Helper()
	p := &partnerWithJWT{ca: testca.New(t, testca.WithTrustDomain("partner.example"))}
	var err error
	if p.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	b := spiffebundle.New(p.ca.TrustDomain)
	b.SetX509Authorities([]*x509.Certificate{p.ca.Root})
	if err := b.AddJWTAuthority("p1", p.key.Public()); err != nil {
		t.Fatal(err)
	}
	b.SetSequenceNumber(1)
	doc, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Admin.AddFederation(context.Background(), api.FederationRequest{TrustDomain: "partner.example", EndpointURL: "https://127.0.0.1:1/bundle",
		Profile: "https_web", Bundle: string(doc)}); err != nil {
		t.Fatal(err)
	}
	return p
}

// token is a JWT-SVID for sub and audience signed with the partner's JWT
// authority.
func (p *partnerWithJWT) token(t *testing.T, sub, audience string) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: p.key, KeyID: "p1"}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{Subject: sub, Audience: jwt.Audience{audience},
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute))}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// federatedWorkload starts a CA federated with partnerWithJWT's trust
// domain and an agent on node (which also names the identity,
// spiffe://example.org/ns/test/NODE, granted to this process), and waits
// until the agent serves that identity.
func federatedWorkload(t *testing.T, node string) (*testenv.CA, *partnerWithJWT, *runningAgent) {
	t.Helper()
	e := testenv.StartCA(t, testenv.Options{})
	p := federateWithJWT(t, e)
	id := td + "/ns/test/" + node
	entry(t, e, id, td+"/node/"+node, time.Minute, nil, fmt.Sprintf("unix:uid:%d", os.Getuid()))
	ra := nodeAgent(t, e, node, nil)
	source(t, ra.sock, id)
	return e, p, ra
}

// TestFederatedJWTBundles: the JWT authorities of a federated trust domain
// reach go-spiffe clients of the agent (FetchJWTBundles) beside the
// agent's own, so that jwtsvid.ParseAndValidate and the agent's
// ValidateJWTSVID accept the partner's JWT-SVID; a token the partner's key
// signs for an ID of this trust domain is refused by both (each trust
// domain's tokens are checked with its own keys only).
func TestFederatedJWTBundles(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, p, ra := federatedWorkload(t, "jf1")
	c := wlClient(t, ra.sock)

	var bundles *jwtbundle.Set
	testwait.EventuallyNil(t, func() (err error) {
		if bundles, err = c.FetchJWTBundles(ctx); err != nil {
			return err
		}
		if _, ok := bundles.Get(p.ca.TrustDomain); !ok {
			return fmt.Errorf("no partner.example JWT bundle among %d", bundles.Len())
		}
		return nil
	}, "the partner's JWT bundle from FetchJWTBundles")
	if own, ok := bundles.Get(spiffeid.RequireTrustDomainFromString("example.org")); !ok || len(own.JWTAuthorities()) == 0 {
		t.Fatal("FetchJWTBundles lost the agent's own JWT bundle")
	}
	if pb, _ := bundles.Get(p.ca.TrustDomain); !pb.HasJWTAuthority("p1") {
		t.Fatal("the partner's JWT bundle lacks its key p1")
	}

	good := p.token(t, "spiffe://partner.example/ns/prod/api", "billing")
	if svid, err := jwtsvid.ParseAndValidate(good, bundles, []string{"billing"}); err != nil || svid.ID.String() != "spiffe://partner.example/ns/prod/api" {
		t.Fatalf("go-spiffe refuses the partner's JWT-SVID with the served bundles: %v", err)
	}
	if svid, err := c.ValidateJWTSVID(ctx, good, "billing"); err != nil || svid.ID.String() != "spiffe://partner.example/ns/prod/api" {
		t.Fatalf("ValidateJWTSVID refuses the partner's JWT-SVID: %v", err)
	}

	forged := p.token(t, td+"/ns/prod/api", "billing")
	if _, err := jwtsvid.ParseAndValidate(forged, bundles, []string{"billing"}); err == nil {
		t.Fatal("a token the partner's key signed for an ID of this trust domain validates with the served bundles")
	}
	if _, err := c.ValidateJWTSVID(ctx, forged, "billing"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("ValidateJWTSVID of a token the partner signed for this trust domain: %v, want InvalidArgument", err)
	}
}

// TestSDSFederatedValidationContexts: an SDS client from go-control-plane
// gets a validation context per trust domain (the partner's by its ID,
// holding the partner's root only; ROOTCA holding the local roots only)
// and ALL, Envoy's SPIFFE validator with each trust domain's own bundle.
func TestSDSFederatedValidationContexts(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e, p, ra := federatedWorkload(t, "sf1")
	sds := secretv3.NewSecretDiscoveryServiceClient(dialAgent(t, ra.sock))
	names := []string{"spiffe://partner.example", agent.SDSRootCA, agent.SDSAllBundles}
	got := map[string]*tlsv3.CertificateValidationContext{}
	testwait.EventuallyNil(t, func() error {
		resp, err := sds.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: agent.SDSSecretType, ResourceNames: names})
		if err != nil {
			return err
		}
		clear(got)
		for _, a := range resp.Resources {
			var s tlsv3.Secret
			if err := a.UnmarshalTo(&s); err != nil {
				return err
			}
			got[s.Name] = s.GetValidationContext()
		}
		if len(got) != len(names) {
			return fmt.Errorf("%d validation contexts, want %d", len(got), len(names))
		}
		return nil
	}, "the partner's validation context over SDS")
	roots := func(name string, ds *corev3.DataSource) []*x509.Certificate {
		certs, err := pki.ParseCertificates(ds.GetInlineBytes())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return certs
	}
	only := func(name string, certs []*x509.Certificate, want *x509.Certificate) {
		if len(certs) != 1 || !certs[0].Equal(want) {
			t.Errorf("%s holds %d roots, want exactly %s", name, len(certs), want.Subject)
		}
	}
	only("spiffe://partner.example", roots("partner", got["spiffe://partner.example"].GetTrustedCa()), p.ca.Root)
	only(agent.SDSRootCA, roots("ROOTCA", got[agent.SDSRootCA].GetTrustedCa()), e.CA.Root)

	all := got[agent.SDSAllBundles].GetCustomValidatorConfig()
	if all.GetName() != "envoy.tls.cert_validator.spiffe" {
		t.Fatalf("ALL's validator is %q, want envoy.tls.cert_validator.spiffe", all.GetName())
	}
	var cfg tlsv3.SPIFFECertValidatorConfig
	if err := all.GetTypedConfig().UnmarshalTo(&cfg); err != nil {
		t.Fatal(err)
	}
	tds := map[string][]*x509.Certificate{}
	for _, d := range cfg.TrustDomains {
		tds[d.Name] = roots(d.Name, d.TrustBundle)
	}
	if len(tds) != 2 {
		t.Fatalf("ALL holds trust domains %v, want example.org and partner.example", slices.Collect(maps.Keys(tds)))
	}
	only("ALL/partner.example", tds["partner.example"], p.ca.Root)
	only("ALL/example.org", tds["example.org"], e.CA.Root)
}

// TestFederatedBundleReachesWrittenDirAndProxy: a federation added at the
// CA reaches a --write directory (federated/partner.example.pem, in the
// atomic set) and a proxy following that directory admits the partner's
// peer; removing the federation at the CA removes the file and the proxy
// refuses the partner at its next handshake, all without a restart.
func TestFederatedBundleReachesWrittenDirAndProxy(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := testenv.StartCA(t, testenv.Options{})
	id := td + "/ns/test/fedproxy"
	entry(t, e, id, td+"/node/fw1", 10*time.Minute, []string{"localhost"}, fmt.Sprintf("unix:uid:%d", os.Getuid()))
	dir := filepath.Join(t.TempDir(), "web")
	ws, err := agent.ParseWriteSpec(id + "=" + dir)
	if err != nil {
		t.Fatal(err)
	}
	nodeAgent(t, e, "fw1", func(c *agent.Config) { c.Writes = []agent.WriteSpec{ws} })
	fedFile := filepath.Join(dir, identity.FederatedDir, "partner.example.pem")
	testwait.EventuallyNil(t, func() error { _, err := identity.Load(dir); return err }, "the identity directory")

	ds, err := identity.NewDirSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	followed := make(chan error, 1)
	go func() { followed <- ds.Run(ctx, 50*time.Millisecond, nil) }()
	t.Cleanup(func() { cancel(); <-followed })
	pol, err := authz.FromPatterns([]string{"spiffe://partner.example/**"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := proxy.NewInbound(proxy.InboundConfig{SVID: ds, Bundle: ds, Target: testnet.Echo(t), Policy: proxy.StaticPolicy{P: pol},
		Metrics: proxy.NewMetrics(prometheus.NewRegistry(), "inbound"), Migration: proxy.NewMigrationReport()})
	if err != nil {
		t.Fatal(err)
	}
	srv := testnet.Run(t, p.Serve)
	partner := federateWithJWT(t, e)
	peer := partner.ca.Leaf(t, "spiffe://partner.example/ns/prod/web")
	call := func() error {
		_, err := testnet.RoundTrip(srv.Addr, &tls.Config{RootCAs: pki.CertPool([]*x509.Certificate{e.CA.Root}), ServerName: "localhost",
			Certificates: []tls.Certificate{peer.TLSCertificate()}}, "hello partner")
		return err
	}

	testwait.EventuallyNil(t, func() error {
		certs, err := pki.ReadCertificates(fedFile)
		if err != nil {
			return err
		}
		if len(certs) != 1 || !certs[0].Equal(partner.ca.Root) {
			return fmt.Errorf("%s holds %d certificates, want the partner's root", fedFile, len(certs))
		}
		return nil
	}, "the partner's bundle in the written directory")
	testwait.EventuallyNil(t, call, "the proxy admitting the partner's peer")

	if err := e.Admin.RemoveFederation(ctx, "partner.example"); err != nil {
		t.Fatal(err)
	}
	testwait.EventuallyNil(t, func() error {
		if _, err := os.Stat(fedFile); !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s is still there (%v)", fedFile, err)
		}
		return nil
	}, "the partner's bundle leaving the written directory")
	testwait.Eventually(t, func() bool { return call() != nil }, "the proxy refusing the partner after its bundle went")
	if id, err := identity.Load(dir); err != nil || id.Federated != nil {
		t.Fatalf("the directory after the federation ended: %v, federated %v", err, id.Federated)
	}
}

// TestFederatedBundlesSurviveRestartDuringOutage: the agent keeps the
// federated bundles it fetched in its state directory, so that an agent
// restarted while the CA is down still serves them (FetchX509Bundles) and
// does not drop them from what it writes.
func TestFederatedBundlesSurviveRestartDuringOutage(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e := testenv.StartCA(t, testenv.Options{})
	p := federateWithJWT(t, e)
	entry(t, e, td+"/ns/test/fedout", td+"/node/fo1", time.Hour, nil, fmt.Sprintf("unix:uid:%d", os.Getuid()))
	base := shortDir(t)
	state := filepath.Join(base, "state")
	hasPartner := func(sock string) error {
		set, err := workloadapi.FetchX509Bundles(ctx, addr(sock))
		if err != nil {
			return err
		}
		if b, ok := set.Get(p.ca.TrustDomain); !ok || !b.HasX509Authority(p.ca.Root) {
			return errors.New("no partner.example bundle with the partner's root")
		}
		return nil
	}
	a1 := runAgent(t, agent.Config{StateDir: state, Token: e.Token(t, td+"/node/fo1", api.TokenRequest{}), Socket: filepath.Join(base, "a1.sock")})
	testwait.EventuallyNil(t, func() error { return hasPartner(a1.sock) }, "the partner's bundle from the first agent")
	a1.stop(t)
	e.Stop(t)
	a2 := runAgent(t, agent.Config{StateDir: state, Socket: filepath.Join(base, "a2.sock")})
	if err := hasPartner(a2.sock); err != nil {
		t.Fatalf("the agent restarted during the CA outage: %v", err)
	}
}
