package agent_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testenv"
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
