package authz_test

import (
	"errors"
	"net/url"
	"path"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/text/unicode/norm"

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

// FuzzCheckPath: CheckPath never panics, refuses with a *PathError, and a
// path it accepts reads the same to every kind of server: decoding it again,
// dropping ;parameters (Tomcat, Jetty), taking \ for / (Windows), folding
// Unicode (NFKC) or resolving dot segments adds no segment and leaves none
// to resolve. A rule that allows the path allows it with its parameters
// dropped, and a rule without a final * or / matches on a segment boundary.
func FuzzCheckPath(f *testing.F) {
	for _, p := range pathAttacks {
		f.Add(p, "/public")
	}
	for _, s := range [][2]string{
		{"/public/a;v=1/b", "/public"},
		{"/metrics-secret-admin", "/metrics"},
		{"/metrics/cpu", "/metrics"},
		{"/reports/q1", "/reports/"},
		{"/metricsx;a", "/metrics*"},
		{"/caf%C3%A9/x", "/café"},
		{"/public/100%25.txt", "/public/"},
		{"*", "/"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, escaped, rule string) {
		p, err := authz.CheckPath(escaped)
		if err != nil {
			var pe *authz.PathError
			if !errors.As(err, &pe) || pe.Path != escaped || pe.Reason == "" {
				t.Fatalf("CheckPath(%q): %v (%T) is not a *PathError with a reason", escaped, err, err)
			}
			return
		}
		if p == "*" {
			if escaped != "*" {
				t.Fatalf("CheckPath(%q) = *", escaped)
			}
			return
		}
		if !strings.HasPrefix(p, "/") || !utf8.ValidString(p) {
			t.Fatalf("CheckPath(%q) = %q: not an absolute UTF-8 path", escaped, p)
		}
		for _, r := range p {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("CheckPath(%q) = %q holds a control character", escaped, p)
			}
		}
		if again, err := url.PathUnescape(p); err == nil && again != p {
			t.Fatalf("CheckPath(%q) = %q, which decodes again to %q", escaped, p, again)
		}
		if strings.Contains(p, `\`) {
			t.Fatalf("CheckPath(%q) = %q holds a backslash", escaped, p)
		}
		stripped := stripParams(p)
		for name, reading := range map[string]string{
			"literal":                 p,
			"without parameters":      stripped,
			"NFKC":                    norm.NFKC.String(p),
			"NFKC without parameters": stripParams(norm.NFKC.String(p)),
		} {
			if c := cleanKeepSlash(reading); c != reading {
				t.Fatalf("CheckPath(%q) = %q, which a server reading it %s resolves to %q", escaped, p, name, c)
			}
		}
		pol, err := authz.Parse([]byte(`rules: [{roles: [r], paths: [` + strconv.Quote(rule) + `]}]`))
		if err != nil {
			return
		}
		allowed := func(p string) bool {
			return pol.Allow(authz.Request{ID: spiffeid.RequireFromString("spiffe://example.org/a"), Roles: []string{"r"}, Method: "GET", Path: p}) == nil
		}
		if !allowed(p) {
			return
		}
		if !allowed(stripped) {
			t.Fatalf("rule %q allows %q but not %q, which servers that drop ;parameters read", rule, p, stripped)
		}
		if !strings.HasSuffix(rule, "*") && !strings.HasSuffix(rule, "/") && p != rule && !strings.HasPrefix(p, rule+"/") {
			t.Fatalf("rule %q allows %q across a segment boundary", rule, p)
		}
	})
}

// stripParams drops ";..." from every segment, as Tomcat and Jetty do.
func stripParams(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i], _, _ = strings.Cut(s, ";")
	}
	return strings.Join(segs, "/")
}

// cleanKeepSlash resolves dot and empty segments, keeping a final slash.
func cleanKeepSlash(p string) string {
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}
