package agent_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testwait"
)

func wlClient(t *testing.T, sock string) *workloadapi.Client {
	t.Helper()
	c, err := workloadapi.New(context.Background(), addr(sock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// jwtSetup starts a CA, registers id for this process on node, runs
// node's agent and waits for a first JWT-SVID for audience through a
// go-spiffe client of it.
func jwtSetup(t *testing.T, ctx context.Context, id, node, audience string) (*testenv.CA, *api.Entry, *runningAgent, *workloadapi.Client, *jwtsvid.SVID) {
	t.Helper()
	e := testenv.StartCA(t, testenv.Options{})
	en := entry(t, e, id, td+"/node/"+node, time.Minute, nil, fmt.Sprintf("unix:uid:%d", os.Getuid()))
	ra := nodeAgent(t, e, node, nil)
	c := wlClient(t, ra.sock)
	var svid *jwtsvid.SVID
	testwait.EventuallyNil(t, func() (err error) {
		svid, err = c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: audience})
		return err
	}, "a JWT-SVID from the agent")
	return e, en, ra, c, svid
}

// TestJWTSVIDWithGoSpiffe: an unmodified go-spiffe client fetches a
// JWT-SVID for an audience and the JWT bundle from the agent, validates
// the token against that bundle (and through ValidateJWTSVID), and a wrong
// audience fails both ways. The token is cached per audience; a new
// audience makes a new token. A revoked node, or a deleted entry, gets no
// new JWT-SVID.
func TestJWTSVIDWithGoSpiffe(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	id := td + "/ns/test/jwt"
	e, en, _, c, svid := jwtSetup(t, ctx, id, "j1", "billing")
	if svid.ID.String() != id {
		t.Fatalf("JWT-SVID for %s, want %s", svid.ID, id)
	}
	if life := svid.Expiry.Sub(time.Now()); life > time.Minute+5*time.Second {
		t.Errorf("JWT-SVID lives %s, more than the entry's minute", life)
	}
	bundles, err := c.FetchJWTBundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := jwtsvid.ParseAndValidate(svid.Marshal(), bundles, []string{"billing"}); err != nil || got.ID.String() != id {
		t.Fatalf("the JWT-SVID does not validate against the served bundle: %v", err)
	}
	if _, err := jwtsvid.ParseAndValidate(svid.Marshal(), bundles, []string{"payroll"}); err == nil {
		t.Fatal("a JWT-SVID for billing validates for payroll")
	}
	if got, err := c.ValidateJWTSVID(ctx, svid.Marshal(), "billing"); err != nil || got.ID.String() != id {
		t.Fatalf("ValidateJWTSVID: %v", err)
	}
	if _, err := c.ValidateJWTSVID(ctx, svid.Marshal(), "payroll"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("ValidateJWTSVID with a wrong audience: %v, want InvalidArgument", err)
	}
	// The bundle is the CA's own SPIFFE bundle's JWT keys.
	td0 := spiffeid.RequireTrustDomainFromString("example.org")
	jb, err := bundles.GetJWTBundleForTrustDomain(td0)
	if err != nil || len(jb.JWTAuthorities()) == 0 {
		t.Fatalf("no JWT authorities for %s: %v", td0, err)
	}
	sb, err := e.Admin.SPIFFEBundle(ctx, td0)
	if err != nil {
		t.Fatal(err)
	}
	if !sb.JWTBundle().Equal(jb) || len(sb.X509Authorities()) != 1 || !sb.X509Authorities()[0].Equal(e.Root) {
		t.Fatal("the agent's JWT bundle is not the CA's, or the CA's SPIFFE bundle lacks its root")
	}

	// Cached per audience until half-life; another audience is another token.
	again, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "billing"})
	if err != nil || again.Marshal() != svid.Marshal() {
		t.Fatalf("a second fetch for the same audience did not come from the cache: %v", err)
	}
	other, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "payroll"})
	if err != nil || other.Marshal() == svid.Marshal() || other.Audience[0] != "payroll" {
		t.Fatalf("another audience: %v", err)
	}
	// No audience: refused.
	if _, err := c.FetchJWTSVID(ctx, jwtsvid.Params{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("FetchJWTSVID without an audience: %v, want InvalidArgument", err)
	}

	// The CA refuses a JWT-SVID to a node the entry does not grant.
	other2 := enroll(t, e, td+"/node/j2")
	_, err = clientAs(t, e, other2).NodeJWTSVID(ctx, api.NodeJWTSVIDRequest{EntryID: en.ID, Audience: []string{"billing"}})
	wantAPIError(t, "node j2 asks for j1's JWT-SVID", err, http.StatusForbidden, "entry_not_granted")

	// Revoking the node stops new JWT-SVIDs at once: a new audience (not
	// cached) is refused.
	if _, err := e.Admin.Revoke(ctx, api.RevokeRequest{SPIFFEID: td + "/node/j1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "after-revocation"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a JWT-SVID through a revoked node: %v, want PermissionDenied", err)
	}
}

// TestJWTSVIDEntryDeletedOrIdentityRevoked: deleting the entry stops new
// JWT-SVIDs; revoking the identity drops the agent's cached tokens so the
// next one is signed after the revocation.
func TestJWTSVIDEntryDeletedOrIdentityRevoked(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	id := td + "/ns/test/jwt2"
	e, en, ra, c, first := jwtSetup(t, ctx, id, "j3", "a")
	// Wait for the agent's X.509-SVID, so the revocation has a certificate
	// whose event reaches the agent.
	source(t, ra.sock, id)
	revokedAt := time.Now()
	if _, err := e.Admin.Revoke(ctx, api.RevokeRequest{SPIFFEID: id}); err != nil {
		t.Fatal(err)
	}
	testwait.EventuallyNil(t, func() error {
		s, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "a"})
		if err != nil {
			return err
		}
		if s.Marshal() == first.Marshal() {
			return fmt.Errorf("still the token issued before the revocation")
		}
		if iat := s.Claims["iat"].(float64); time.Unix(int64(iat)+1, 0).Before(revokedAt) {
			return fmt.Errorf("a token issued at %v, before the revocation", iat)
		}
		return nil
	}, "the cached JWT-SVID dropped after the identity's revocation")

	if err := e.Admin.DeleteEntry(ctx, en.ID); err != nil {
		t.Fatal(err)
	}
	node := enroll(t, e, td+"/node/j3")
	_, err := clientAs(t, e, node).NodeJWTSVID(ctx, api.NodeJWTSVIDRequest{EntryID: en.ID, Audience: []string{"b"}})
	wantAPIError(t, "a JWT-SVID of a deleted entry", err, http.StatusForbidden, "entry_not_granted")
}
