package audit_test

import (
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/audit"
)

func TestPartnerFindings(t *testing.T) {
	now := time.Now()
	ended := now.Add(-time.Minute)
	p := func(name, td string, services ...string) api.Partner {
		return api.Partner{Name: name, TrustDomain: td, EndsAt: now.Add(time.Hour), IDPrefix: "spiffe://example.org/partner/" + name + "/",
			PartnerScope: api.PartnerScope{Services: services}}
	}
	old := p("old", "", "spiffe://example.org/**")
	old.EndedAt = &ended
	got := audit.PartnerFindings([]api.Partner{
		p("narrow", "", "spiffe://example.org/ns/prod/orders"),
		p("wide", "partner.example", "spiffe://example.org/ns/prod/orders", "spiffe://example.org/**"),
		p("root", "", "spiffe://example.org/*/api"),
		p("legacy", ""),
		old,
	}, now)
	var ids []string
	for _, f := range got {
		ids = append(ids, f.ID+":"+strings.Fields(strings.TrimPrefix(f.Evidence, "partnership "))[0])
	}
	if want := "partner-scope-broad:wide partner-scope-broad:root partner-scope-none:legacy"; strings.Join(ids, " ") != want {
		t.Fatalf("findings %v, want %s", ids, want)
	}
	if !strings.Contains(got[0].Evidence, "every identity of the trust domain partner.example") || !strings.Contains(got[0].Fix, "mutual partner scope wide") {
		t.Errorf("finding for a federated partner: %+v", got[0])
	}
}
