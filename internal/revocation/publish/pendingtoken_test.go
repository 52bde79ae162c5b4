package publish_test

import (
	"context"
	"errors"
	"testing"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pgtest"
	"github.com/mutual-tls/mutual/internal/pki"
)

// TestRevokedIdentityEndsItsPendingTokens: a join token handed out for an
// identity before that identity was revoked (an attacker's stolen copy, or
// one the revoked workload asked for in advance) no longer enrolls; a token
// made after the revocation does, since the operator meant to issue again.
// The same for a node.
func TestRevokedIdentityEndsItsPendingTokens(t *testing.T) {
	t.Parallel()
	for name, storeURL := range map[string]func(t *testing.T) string{
		"sqlite":   func(t *testing.T) string { return "" },
		"postgres": func(t *testing.T) string { return pgtest.Start(t).NewDatabase(t) },
	} {
		t.Run(name, func(t *testing.T) {
			e := startCA(t, storeURL(t))
			ctx := context.Background()
			for _, tc := range []struct {
				id  string
				req func(id string) api.RevokeRequest
			}{
				{"spiffe://example.org/ns/prod/web", func(id string) api.RevokeRequest { return api.RevokeRequest{SPIFFEID: id} }},
				{"spiffe://example.org/node/n1", func(id string) api.RevokeRequest { return api.RevokeRequest{Node: id} }},
			} {
				e.Enroll(t, tc.id, api.TokenRequest{})
				pending, err := e.Admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: tc.id})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := e.Admin.Revoke(ctx, tc.req(tc.id)); err != nil {
					t.Fatalf("revoke %s: %v", tc.id, err)
				}
				_, err = client.RequestIdentity(ctx, pending.Token, pki.KeyECDSAP256, 0)
				var ae *client.APIError
				if !errors.As(err, &ae) || ae.Code != "cert_revoked" {
					t.Fatalf("BUG: a token made before %s was revoked still enrolls: %v", tc.id, err)
				}
				t.Logf("%s: %v", tc.id, err)
				fresh, err := e.Admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: tc.id})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := client.RequestIdentity(ctx, fresh.Token, pki.KeyECDSAP256, 0); err != nil {
					t.Fatalf("a token made after %s was revoked: %v", tc.id, err)
				}
			}
		})
	}
}
