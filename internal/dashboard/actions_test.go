package dashboard_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/api"
)

// TestActions: revoking an identity, voiding a token, deleting an entry and
// ending a partnership each take a confirmation page, the CSRF token, the
// confirmation and a reason; without any of them nothing happens at the
// CA, and with all of them the CA shows it done and the page says so (a
// crafted "done" link says nothing).
func TestActions(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	web := e.enroll(t, "spiffe://example.org/ns/prod/web")
	web2 := e.enroll(t, "spiffe://example.org/ns/prod/web")
	tok, err := e.cl.CreateToken(ctx, api.TokenRequest{SPIFFEID: "spiffe://example.org/ns/prod/api"})
	if err != nil {
		t.Fatal(err)
	}
	entry, err := e.cl.CreateEntry(ctx, api.EntryRequest{SPIFFEID: "spiffe://example.org/ns/prod/db", Nodes: []string{"spiffe://example.org/node/*"}, Selectors: []string{"unix:uid:1001"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.cl.CreatePartner(ctx, api.PartnerRequest{Name: "acme", Roles: []string{"billing"}, EndsAt: time.Now().Add(24 * time.Hour),
		PartnerScope: api.PartnerScope{Services: []string{"spiffe://example.org/ns/prod/orders"}}}); err != nil {
		t.Fatal(err)
	}
	hc := browser(t)
	same := map[string]string{"Origin": e.base, "Sec-Fetch-Site": "same-origin"}

	cases := []struct {
		kind, target, reason, from string
		done                       func() bool
	}{
		{"revoke-identity", "spiffe://example.org/ns/prod/web", "keyCompromise", "/identities", func() bool { return e.revoked(t, web) && e.revoked(t, web2) }},
		{"void-token", tok.ID, "handed to the wrong team", "/identities", func() bool {
			ts, err := e.cl.ListTokens(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range ts.Tokens {
				if x.ID == tok.ID {
					return !x.ExpiresAt.After(time.Now())
				}
			}
			return false
		}},
		{"delete-entry", entry.ID, "db moved to another cluster", "/identities", func() bool {
			es, err := e.cl.ListEntries(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range es.Entries {
				if x.ID == entry.ID {
					return false
				}
			}
			return true
		}},
		{"end-partner", "acme", "contract over", "/federation", func() bool {
			ps, err := e.cl.ListPartners(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return len(ps.Partners) == 1 && ps.Partners[0].EndedAt != nil
		}},
	}
	for _, c := range cases {
		t.Run(c.kind, func(t *testing.T) {
			_, list, _ := get(t, hc, e.base+c.from)
			link := "/actions/" + c.kind + "?target=" + url.QueryEscape(c.target)
			if !strings.Contains(list, "/actions/"+c.kind+"?target=") {
				t.Errorf("%s offers no %s link", c.from, c.kind)
			}
			status, page, _ := get(t, hc, e.base+link)
			if status != http.StatusOK || !strings.Contains(page, c.target) {
				t.Fatalf("confirmation page: %d\n%s", status, page)
			}
			csrf := csrfOf(t, page)
			action := e.base + "/actions/" + c.kind
			for name, form := range map[string]url.Values{
				"unconfirmed":    {"csrf": {csrf}, "target": {c.target}, "reason": {c.reason}},
				"without reason": {"csrf": {csrf}, "target": {c.target}, "confirm": {"yes"}},
			} {
				if status, body, _ := post(t, hc, action, form, same); status != http.StatusBadRequest || !strings.Contains(body, "Nothing done") || c.done() {
					t.Fatalf("%s: %d, done %v\n%s", name, status, c.done(), body)
				}
			}
			form := url.Values{"csrf": {csrf}, "target": {c.target}, "reason": {c.reason}, "confirm": {"yes"}}
			if status, body, _ := post(t, hc, action, form, map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}); status != http.StatusForbidden || c.done() {
				t.Fatalf("a cross-site POST: %d, done %v\n%s", status, c.done(), body)
			}
			bad := url.Values{"target": {c.target}, "reason": {c.reason}, "confirm": {"yes"}, "csrf": {"forged"}}
			if status, _, _ := post(t, hc, action, bad, same); status != http.StatusForbidden || c.done() {
				t.Fatalf("a forged CSRF token: %d, done %v", status, c.done())
			}
			status, body, loc := post(t, hc, action, form, same)
			if status != http.StatusSeeOther || !c.done() {
				t.Fatalf("the confirmed action: %d, done at the CA %v\n%s", status, c.done(), body)
			}
			_, after, _ := get(t, hc, e.base+loc)
			if !strings.Contains(after, `<p class="done">`) || !strings.Contains(after, c.target) {
				t.Errorf("the page after the action (%s) does not say it was done:\n%s", loc, after)
			}
			u, _ := url.Parse(loc)
			q := u.Query()
			q.Set("target", "spiffe://example.org/ns/someone-else")
			if _, forged, _ := get(t, hc, e.base+u.Path+"?"+q.Encode()); strings.Contains(forged, `<p class="done">`) {
				t.Errorf("a crafted done link made the page claim an action")
			}
		})
	}
}
