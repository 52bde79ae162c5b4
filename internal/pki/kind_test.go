package pki

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestKindOfNotFooledBySubstrings: an ID is an operator, node or the CA only
// by its first path segment; /admin/ or /mutual/server deeper in a workload's
// path (spiffe://td/ns/admin/x) makes it no operator.
func TestKindOfNotFooledBySubstrings(t *testing.T) {
	for _, c := range []struct {
		id   string
		want Kind
	}{
		{"spiffe://td/admin/operator", KindAdmin},
		{"spiffe://td/admin/a/b", KindAdmin},
		{"spiffe://td/ns/admin/x", KindWorkload},
		{"spiffe://td/Admin/x", KindWorkload},
		{"spiffe://td/administrator/x", KindWorkload},
		{"spiffe://td/admin", KindReserved},
		{"spiffe://td/node/web-1", KindNode},
		{"spiffe://td/ns/node/web-1", KindWorkload},
		{"spiffe://td/nodes/web-1", KindWorkload},
		{"spiffe://td/node", KindReserved},
		{"spiffe://td/mutual/server", KindServer},
		{"spiffe://td/ns/mutual/server", KindWorkload},
		{"spiffe://td/mutual/server/x", KindReserved},
		{"spiffe://td/mutual/other", KindReserved},
		{"spiffe://td/mutual", KindReserved},
		{"spiffe://td/partner/acme/api", KindPartner},
		{"spiffe://td/partner", KindReserved},
		{"spiffe://td/ns/prod/web", KindWorkload},
		{"spiffe://td", KindWorkload},
	} {
		id := spiffeid.RequireFromString(c.id)
		if got := KindOf(id); got != c.want {
			t.Errorf("KindOf(%s) = %s, want %s", c.id, got, c.want)
		}
	}
	if got := ServerID(spiffeid.RequireTrustDomainFromString("td")).String(); got != "spiffe://td/mutual/server" {
		t.Errorf("ServerID = %s", got)
	}
	if KindOf(ServerID(spiffeid.RequireTrustDomainFromString("td"))) != KindServer {
		t.Error("ServerID is not of KindServer")
	}
}
