package authz_test

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/authz"
)

// probe requests evaluated against every policy the parser accepts.
var probes = []authz.Request{
	{ID: spiffeid.RequireFromString("spiffe://example.org/ns/prod/web")},
	{ID: spiffeid.RequireFromString("spiffe://example.org/ns/prod/web"), Roles: []string{"auditor"}, Method: "GET", Path: "/reports/q1"},
	{ID: spiffeid.RequireFromString("spiffe://other.org/a/b/c/d/e"), Roles: []string{"admin", ""}, Method: "POST", Path: ""},
	{ID: spiffeid.RequireFromString("spiffe://example.org"), Method: "DELETE", Path: "/"},
	{},
}

// FuzzParse: the policy parser never panics; what it accepts is a usable
// policy whose every rule says whom it allows, and which evaluates without
// panicking.
func FuzzParse(f *testing.F) {
	f.Add([]byte(policyYAML))
	f.Add([]byte("rules:\n  - ids: [\"spiffe://example.org/**\"]\n"))
	f.Add([]byte("rules: [{roles: [a], methods: [GET], paths: [/]}]"))
	f.Add([]byte("rules:\n  - ids: &a [\"spiffe://example.org/x\"]\n  - ids: *a\n"))
	f.Add([]byte("rules:\n  - ids: [\"spiffe://example.org/x\"]\n---\nrules: []\n"))
	f.Add([]byte("rules: !!map {}\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := authz.Parse(data)
		if err != nil {
			if p != nil {
				t.Fatalf("Parse returned a policy and an error: %v", err)
			}
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if len(p.Rules) == 0 {
			t.Fatal("Parse accepted a policy with no rules")
		}
		for i, r := range p.Rules {
			if len(r.IDs) == 0 && len(r.Roles) == 0 {
				t.Fatalf("rule %d allows everyone: %+v", i+1, r)
			}
			for _, m := range r.Methods {
				if m == "" || strings.ToUpper(m) != m {
					t.Fatalf("rule %d: accepted method %q", i+1, m)
				}
			}
			for _, pth := range r.Paths {
				if !strings.HasPrefix(pth, "/") {
					t.Fatalf("rule %d: accepted path %q", i+1, pth)
				}
			}
			for _, pat := range r.IDs {
				if _, err := authz.ParsePattern(pat.String()); err != nil {
					t.Fatalf("rule %d: pattern %q does not parse again: %v", i+1, pat, err)
				}
			}
		}
		for _, req := range probes {
			p.Allow(req)
			p.AllowsAnyRequest(req.ID, req.Roles)
		}
		// A policy allows nobody with neither an ID it names nor a role.
		if err := p.Allow(authz.Request{}); err == nil {
			t.Fatal("the policy allows the zero identity with no roles")
		}
	})
}

// FuzzParsePattern: ParsePattern never panics; a pattern it accepts prints
// as written; one without wildcards is a SPIFFE ID that it matches, and
// matches nothing longer or shorter.
func FuzzParsePattern(f *testing.F) {
	for _, s := range []string{
		"spiffe://example.org/ns/prod/web",
		"spiffe://example.org/ns/prod/*",
		"spiffe://example.org/ns/**",
		"spiffe://example.org/**",
		"spiffe://example.org",
		"spiffe://example.org/",
		"spiffe://example.org/a//b",
		"spiffe://example.org/a/../b",
		"spiffe://a.b-c_d/x.y-z_0",
		"spiffe://example.org/**/x",
		"spiffe://example.org/a*",
		"spiffe://Example.org/a",
		"spiffe://example.org/a%2Fb",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := authz.ParsePattern(s)
		if err != nil {
			if !strings.Contains(err.Error(), "pattern") {
				t.Fatalf("error %q does not say it is about a pattern", err)
			}
			return
		}
		if p.String() != s {
			t.Fatalf("String() = %q, want %q", p.String(), s)
		}
		if strings.Contains(s, "*") {
			// Exercise Match on a few IDs; it must not panic.
			for _, req := range probes {
				p.Match(req.ID)
			}
			return
		}
		id, err := spiffeid.FromString(s)
		if err != nil {
			t.Fatalf("pattern %q without wildcards parsed, but is not a SPIFFE ID: %v", s, err)
		}
		if !p.Match(id) {
			t.Fatalf("pattern %q does not match itself", s)
		}
		if longer, err := spiffeid.FromString(s + "/x"); err == nil && p.Match(longer) {
			t.Fatalf("pattern %q matches the longer %s", s, longer)
		}
		if id.Path() != "" {
			if parent, err := spiffeid.FromPath(id.TrustDomain(), id.Path()[:strings.LastIndex(id.Path(), "/")]); err == nil && p.Match(parent) {
				t.Fatalf("pattern %q matches its parent %s", s, parent)
			}
		}
	})
}
