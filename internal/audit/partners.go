package audit

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
)

// partners judges the partnerships the CA at caURL lists (PartnerFindings).
func (a *auditor) partners(ctx context.Context, cl *client.Client, caURL string) error {
	list, err := cl.ListPartners(ctx)
	if err != nil {
		return fmt.Errorf("--ca-url %s: list partnerships: %w", caURL, err)
	}
	a.r.Checked = append(a.r.Checked, "partnerships of "+caURL)
	for _, f := range PartnerFindings(list.Partners, a.o.Now()) {
		a.add(f.ID, f.Severity, f.Title, f.Evidence, f.Fix)
	}
	return nil
}

// PartnerFindings judges partnerships in force at now: one whose scope
// reaches every service of the trust domain (or every service with a
// wildcard at its root) lets another organisation's identities, or a whole
// foreign trust domain, call whatever the services' own policies allow; one
// with no service (made before scopes existed) reaches nothing.
func PartnerFindings(partners []api.Partner, now time.Time) []Finding {
	var out []Finding
	for _, p := range partners {
		if p.EndedAt != nil || !p.EndsAt.After(now) {
			continue
		}
		who := "partnership " + p.Name + " (identities under " + p.IDPrefix
		if p.TrustDomain != "" {
			who += ", and every identity of the trust domain " + p.TrustDomain
		}
		who += ")"
		fix := fmt.Sprintf("name the services it needs: mutual partner scope %s --allow-service spiffe://TRUST-DOMAIN/ns/prod/SERVICE --allow-request \"GET /v1/PATH/\"", p.Name)
		if len(p.Services) == 0 {
			out = append(out, Finding{ID: "partner-scope-none", Severity: Low, Title: "a partnership reaches no service",
				Evidence: who + " has no scope (it was made before scopes existed): proxies refuse its identities", Fix: fix})
			continue
		}
		for _, s := range p.Services {
			_, path, _ := strings.Cut(strings.TrimPrefix(s, "spiffe://"), "/")
			if path != "**" && !strings.HasPrefix(path, "*") {
				continue
			}
			reach := "every request"
			if len(p.Requests) > 0 {
				reach = strings.Join(p.Requests, "; ")
			}
			out = append(out, Finding{ID: "partner-scope-broad", Severity: Medium, Title: "a partnership's scope reaches every service",
				Evidence: fmt.Sprintf("%s may reach %s (%s) on any service whose policy lets it in", who, s, reach), Fix: fix})
		}
	}
	return out
}
