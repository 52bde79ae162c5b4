package authz_test

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/authz"
)

func TestParseScopeRefuses(t *testing.T) {
	for _, c := range []struct {
		name               string
		services, requests []string
	}{
		{"no service", nil, []string{"GET /x"}},
		{"a service that is no pattern", []string{"api"}, nil},
		{"a rule without a path", []string{"spiffe://example.org/api"}, []string{"GET"}},
		{"a lower-case method", []string{"spiffe://example.org/api"}, []string{"get /x"}},
		{"a star inside the path", []string{"spiffe://example.org/api"}, []string{"GET /a*/b"}},
		{"an encoded path", []string{"spiffe://example.org/api"}, []string{"GET /a%2e"}},
		{"a dot segment", []string{"spiffe://example.org/api"}, []string{"GET /a/../b"}},
	} {
		if _, err := authz.ParseScope(c.services, c.requests); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
}

func TestScopeAllows(t *testing.T) {
	s, err := authz.ParseScope([]string{"spiffe://example.org/ns/prod/*"}, []string{"GET,HEAD /v1/orders/", "* /status"})
	if err != nil {
		t.Fatal(err)
	}
	if !s.AllowsService(spiffeid.RequireFromString("spiffe://example.org/ns/prod/api")) ||
		s.AllowsService(spiffeid.RequireFromString("spiffe://example.org/ns/staging/api")) ||
		s.AllowsService(spiffeid.RequireFromString("spiffe://other.org/ns/prod/api")) {
		t.Error("services judged wrongly")
	}
	for _, c := range []struct {
		method, path string
		want         bool
	}{
		{"GET", "/v1/orders/1", true}, {"HEAD", "/v1/orders/1", true}, {"POST", "/v1/orders/1", false},
		{"GET", "/v1/orders", false}, {"DELETE", "/status", true}, {"GET", "/statusx", false},
		{"", "", false}, // a whole connection: rules on methods cannot be judged
	} {
		if got := s.AllowsRequest(c.method, c.path); got != c.want {
			t.Errorf("%q %q: %v, want %v", c.method, c.path, got, c.want)
		}
	}
	var none *authz.Scope
	if none.AllowsRequest("GET", "/") || none.AllowsService(spiffeid.RequireFromString("spiffe://example.org/api")) {
		t.Error("a nil scope reaches something")
	}
}

func TestPartnersScope(t *testing.T) {
	own := spiffeid.RequireTrustDomainFromString("example.org")
	s, _ := authz.ParseScope([]string{"spiffe://example.org/api"}, nil)
	ps := authz.NewPartners([]authz.Partnership{{Name: "acme", Scope: s}, {Name: "globex", TrustDomain: spiffeid.RequireTrustDomainFromString("globex.example"), Scope: s}})
	for _, c := range []struct {
		ps          *authz.Partners
		id          string
		partner, ok bool
	}{
		{ps, "spiffe://example.org/partner/acme/x", true, true},
		{ps, "spiffe://example.org/partner/acme", true, true},
		{ps, "spiffe://example.org/partner/initech/x", true, false},
		{ps, "spiffe://example.org/ns/partner/acme", false, false},
		{ps, "spiffe://globex.example/any", true, true},
		{ps, "spiffe://other.example/any", false, false},
		{nil, "spiffe://example.org/partner/acme/x", true, false},
		{nil, "spiffe://globex.example/any", false, false},
		{authz.PartnersUnknown(), "spiffe://globex.example/any", true, false},
		{authz.PartnersUnknown(), "spiffe://example.org/ns/web", false, false},
	} {
		got, partner := c.ps.Scope(own, spiffeid.RequireFromString(c.id))
		if partner != c.partner || (got != nil) != c.ok {
			t.Errorf("%s: partner %v, scope %v; want %v, %v", c.id, partner, got != nil, c.partner, c.ok)
		}
	}
}
