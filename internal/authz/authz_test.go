package authz_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/authz"
)

func id(s string) spiffeid.ID { return spiffeid.RequireFromString(s) }

func TestPatternMatch(t *testing.T) {
	tests := []struct {
		pattern string
		id      string
		want    bool
	}{
		// exact
		{"spiffe://example.org/ns/prod/web", "spiffe://example.org/ns/prod/web", true},
		{"spiffe://example.org/ns/prod/web", "spiffe://example.org/ns/prod/db", false},
		{"spiffe://example.org/ns/prod/web", "spiffe://example.org/ns/prod/web/extra", false},
		{"spiffe://example.org/ns/prod/web", "spiffe://example.org/ns/prod", false},
		{"spiffe://example.org/ns/prod/web", "spiffe://example.org", false},
		{"spiffe://example.org/ns/prod/web", "spiffe://example.org/ns/prod/webx", false},
		// trust domain mismatch, whatever the path
		{"spiffe://example.org/ns/prod/web", "spiffe://other.org/ns/prod/web", false},
		{"spiffe://example.org/**", "spiffe://other.org/ns/prod/web", false},
		{"spiffe://example.org/ns/*/web", "spiffe://example.org.evil/ns/prod/web", false},
		// * is exactly one segment
		{"spiffe://example.org/ns/prod/*", "spiffe://example.org/ns/prod/web", true},
		{"spiffe://example.org/ns/prod/*", "spiffe://example.org/ns/prod", false},
		{"spiffe://example.org/ns/prod/*", "spiffe://example.org/ns/prod/web/v2", false},
		{"spiffe://example.org/ns/*/web", "spiffe://example.org/ns/staging/web", true},
		{"spiffe://example.org/ns/*/web", "spiffe://example.org/ns/staging/db", false},
		{"spiffe://example.org/ns/*/web", "spiffe://example.org/ns/a/b/web", false},
		{"spiffe://example.org/*", "spiffe://example.org/web", true},
		{"spiffe://example.org/*", "spiffe://example.org", false},
		{"spiffe://example.org/*/*", "spiffe://example.org/a/b", true},
		{"spiffe://example.org/*/*", "spiffe://example.org/a", false},
		// ** is one or more segments
		{"spiffe://example.org/ns/**", "spiffe://example.org/ns/prod", true},
		{"spiffe://example.org/ns/**", "spiffe://example.org/ns/prod/web/v2/x", true},
		{"spiffe://example.org/ns/**", "spiffe://example.org/ns", false},
		{"spiffe://example.org/ns/**", "spiffe://example.org/nsx/prod", false},
		{"spiffe://example.org/ns/**", "spiffe://example.org/other/prod", false},
		{"spiffe://example.org/**", "spiffe://example.org/anything", true},
		{"spiffe://example.org/**", "spiffe://example.org/a/b/c/d", true},
		{"spiffe://example.org/**", "spiffe://example.org", false},
		{"spiffe://example.org/*/**", "spiffe://example.org/a", false},
		{"spiffe://example.org/*/**", "spiffe://example.org/a/b", true},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+" ~ "+tt.id, func(t *testing.T) {
			p, err := authz.ParsePattern(tt.pattern)
			if err != nil {
				t.Fatalf("ParsePattern(%q): %v", tt.pattern, err)
			}
			if p.String() != tt.pattern {
				t.Errorf("String() = %q, want %q", p.String(), tt.pattern)
			}
			if got := p.Match(id(tt.id)); got != tt.want {
				t.Errorf("Match(%s) = %v, want %v", tt.id, got, tt.want)
			}
		})
	}
}

func TestParsePatternErrors(t *testing.T) {
	tests := []struct {
		pattern string
		// every fragment must appear in the message
		want []string
	}{
		{"", []string{"must start with spiffe://"}},
		{"example.org/ns/web", []string{`"example.org/ns/web"`, "must start with spiffe://"}},
		{"https://example.org/web", []string{"must start with spiffe://"}},
		{"SPIFFE://example.org/web", []string{"must start with spiffe://"}},
		{"spiffe://example.org", []string{"has no path", "spiffe://example.org/**"}},
		{"spiffe://example.org/", []string{"has no path"}},
		{"spiffe:///web", []string{"trust domain"}},
		{"spiffe://Example.org/web", []string{"trust domain"}},
		{"spiffe://user@example.org/web", []string{"trust domain"}},
		{"spiffe://example.org:8443/web", []string{"trust domain"}},
		{"spiffe://example.org/**/web", []string{"** may only end a pattern"}},
		{"spiffe://example.org/ns/**/**", []string{"** may only end a pattern"}},
		{"spiffe://example.org/ns/web*", []string{`segment "web*"`, "whole segment"}},
		{"spiffe://example.org/ns/*web", []string{`segment "*web"`, "whole segment"}},
		{"spiffe://example.org/ns/***", []string{`segment "***"`, "whole segment"}},
		{"spiffe://example.org/ns//web", []string{`segment ""`}},
		{"spiffe://example.org/ns/web/", []string{`segment ""`}},
		{"spiffe://example.org/ns/../web", []string{`segment ".."`}},
		{"spiffe://example.org/ns/./web", []string{`segment "."`}},
		{"spiffe://example.org/ns/we%20b", []string{`segment "we%20b"`}},
		{"spiffe://example.org/ns/web?x=1", []string{`segment "web?x=1"`}},
		{"spiffe://example.org/ns/web#frag", []string{`segment "web#frag"`}},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			_, err := authz.ParsePattern(tt.pattern)
			if err == nil {
				t.Fatalf("ParsePattern(%q) succeeded; want an error", tt.pattern)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestFromPatterns(t *testing.T) {
	p, err := authz.FromPatterns([]string{"spiffe://example.org/ns/prod/web", "spiffe://example.org/ops/**"})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Rules) != 2 {
		t.Fatalf("rules = %d, want 2", len(p.Rules))
	}
	for _, tt := range []struct {
		id   string
		want bool
	}{
		{"spiffe://example.org/ns/prod/web", true},
		{"spiffe://example.org/ops/alice", true},
		{"spiffe://example.org/ns/prod/db", false},
	} {
		err := p.Allow(authz.Request{ID: id(tt.id)})
		if (err == nil) != tt.want {
			t.Errorf("Allow(%s) = %v, want allowed=%v", tt.id, err, tt.want)
		}
	}
	if _, err := authz.FromPatterns([]string{"spiffe://example.org/ok", "nope"}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("FromPatterns with a bad pattern: %v; want an error naming it", err)
	}
	empty, err := authz.FromPatterns(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := empty.Allow(authz.Request{ID: id("spiffe://example.org/x")}); err == nil {
		t.Error("a policy with no rules allowed a peer")
	}
}

const policyYAML = `
rules:
  - ids: ["spiffe://example.org/ns/prod/*"]
  - roles: ["auditor"]
    methods: ["GET", "HEAD"]
    paths: ["/reports/"]
  - ids: ["spiffe://example.org/ops/**"]
    roles: ["admin", "oncall"]
  - ids: ["spiffe://example.org/ci/deployer"]
    methods: ["POST"]
  - ids: ["spiffe://example.org/ci/reader"]
    paths: ["/status", "/health"]
`

func TestAllow(t *testing.T) {
	p, err := authz.Parse([]byte(policyYAML))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  authz.Request
		want bool
	}{
		{"ids rule, connection", authz.Request{ID: id("spiffe://example.org/ns/prod/web")}, true},
		{"ids rule, any request", authz.Request{ID: id("spiffe://example.org/ns/prod/web"), Method: "DELETE", Path: "/x"}, true},
		{"ids rule, wrong depth", authz.Request{ID: id("spiffe://example.org/ns/prod/web/v2")}, false},
		{"role rule, GET in prefix", authz.Request{ID: id("spiffe://example.org/audit"), Roles: []string{"auditor"}, Method: "GET", Path: "/reports/q1"}, true},
		{"role rule, HEAD in prefix", authz.Request{ID: id("spiffe://example.org/audit"), Roles: []string{"x", "auditor"}, Method: "HEAD", Path: "/reports/"}, true},
		{"role rule, POST refused", authz.Request{ID: id("spiffe://example.org/audit"), Roles: []string{"auditor"}, Method: "POST", Path: "/reports/q1"}, false},
		{"role rule, path outside prefix", authz.Request{ID: id("spiffe://example.org/audit"), Roles: []string{"auditor"}, Method: "GET", Path: "/admin"}, false},
		{"role rule, prefix without slash", authz.Request{ID: id("spiffe://example.org/audit"), Roles: []string{"auditor"}, Method: "GET", Path: "/reports"}, false},
		{"role rule, method case matters", authz.Request{ID: id("spiffe://example.org/audit"), Roles: []string{"auditor"}, Method: "get", Path: "/reports/q1"}, false},
		{"role rule does not apply at connection level", authz.Request{ID: id("spiffe://example.org/audit"), Roles: []string{"auditor"}}, false},
		{"role rule, no role", authz.Request{ID: id("spiffe://example.org/audit"), Method: "GET", Path: "/reports/q1"}, false},
		{"role rule, role of another trust domain still a role", authz.Request{ID: id("spiffe://other.org/audit"), Roles: []string{"auditor"}, Method: "GET", Path: "/reports/q1"}, true},
		{"ids and roles, both", authz.Request{ID: id("spiffe://example.org/ops/alice"), Roles: []string{"oncall"}}, true},
		{"ids and roles, id only", authz.Request{ID: id("spiffe://example.org/ops/alice")}, false},
		{"ids and roles, role only", authz.Request{ID: id("spiffe://example.org/dev/bob"), Roles: []string{"admin"}}, false},
		{"method rule, POST", authz.Request{ID: id("spiffe://example.org/ci/deployer"), Method: "POST", Path: "/deploy"}, true},
		{"method rule, GET", authz.Request{ID: id("spiffe://example.org/ci/deployer"), Method: "GET", Path: "/deploy"}, false},
		{"method rule, connection level", authz.Request{ID: id("spiffe://example.org/ci/deployer")}, false},
		{"path rule, second prefix", authz.Request{ID: id("spiffe://example.org/ci/reader"), Method: "GET", Path: "/health/live"}, true},
		{"path rule, other path", authz.Request{ID: id("spiffe://example.org/ci/reader"), Method: "GET", Path: "/secrets"}, false},
		{"nobody", authz.Request{ID: id("spiffe://example.org/unknown")}, false},
		{"other trust domain", authz.Request{ID: id("spiffe://other.org/ns/prod/web")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := p.Allow(tt.req)
			if (err == nil) != tt.want {
				t.Fatalf("Allow = %v, want allowed=%v", err, tt.want)
			}
			if err == nil {
				return
			}
			var de *authz.DeniedError
			if !errors.As(err, &de) {
				t.Fatalf("error %T is not a *DeniedError", err)
			}
			if de.ID != tt.req.ID || de.Method != tt.req.Method || de.Path != tt.req.Path {
				t.Errorf("DeniedError = %+v, want the request's ID, method and path", de)
			}
			if !strings.Contains(err.Error(), tt.req.ID.String()) {
				t.Errorf("message %q does not name the peer", err)
			}
			if tt.req.Method != "" && !strings.Contains(err.Error(), tt.req.Method+" "+tt.req.Path) {
				t.Errorf("message %q does not name the method and path", err)
			}
		})
	}
}

func TestAllowsAnyRequest(t *testing.T) {
	p, err := authz.Parse([]byte(policyYAML))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		id    string
		roles []string
		want  bool
	}{
		{"spiffe://example.org/ns/prod/web", nil, true},
		{"spiffe://example.org/ci/deployer", nil, true}, // methods are ignored here
		{"spiffe://example.org/x", []string{"auditor"}, true},
		{"spiffe://example.org/x", nil, false},
		{"spiffe://example.org/ops/alice", nil, false},
	}
	for _, tt := range tests {
		if got := p.AllowsAnyRequest(id(tt.id), tt.roles); got != tt.want {
			t.Errorf("AllowsAnyRequest(%s, %v) = %v, want %v", tt.id, tt.roles, got, tt.want)
		}
	}
}

func TestZeroPolicyAllowsNobody(t *testing.T) {
	var p authz.Policy
	if err := p.Allow(authz.Request{ID: id("spiffe://example.org/a"), Method: "GET", Path: "/"}); err == nil {
		t.Error("the zero policy allowed a request")
	}
	if p.AllowsAnyRequest(id("spiffe://example.org/a"), []string{"admin"}) {
		t.Error("the zero policy allows a peer")
	}
}

func TestMerge(t *testing.T) {
	a, _ := authz.FromPatterns([]string{"spiffe://example.org/a"})
	b, _ := authz.FromPatterns([]string{"spiffe://example.org/b"})
	for _, tt := range []struct {
		name string
		x, y *authz.Policy
		n    int
	}{
		{"both", a, b, 2},
		{"nil base", nil, b, 1},
		{"nil file", a, nil, 1},
		{"neither", nil, nil, 0},
	} {
		m := authz.Merge(tt.x, tt.y)
		if len(m.Rules) != tt.n {
			t.Errorf("%s: %d rules, want %d", tt.name, len(m.Rules), tt.n)
		}
	}
	m := authz.Merge(a, b)
	for _, s := range []string{"spiffe://example.org/a", "spiffe://example.org/b"} {
		if err := m.Allow(authz.Request{ID: id(s)}); err != nil {
			t.Errorf("merged policy refuses %s: %v", s, err)
		}
	}
	// Merge must not alias its inputs' rule slices.
	m.Rules[0] = authz.Rule{}
	if err := a.Allow(authz.Request{ID: id("spiffe://example.org/a")}); err != nil {
		t.Error("changing the merged policy changed its input")
	}
}

func TestParse(t *testing.T) {
	p, err := authz.Parse([]byte(policyYAML))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Rules) != 5 {
		t.Fatalf("%d rules, want 5", len(p.Rules))
	}
	r := p.Rules[1]
	if len(r.IDs) != 0 || len(r.Roles) != 1 || r.Roles[0] != "auditor" || len(r.Methods) != 2 || len(r.Paths) != 1 || r.Paths[0] != "/reports/" {
		t.Errorf("rule 2 = %+v", r)
	}
	if got := p.Rules[0].IDs[0].String(); got != "spiffe://example.org/ns/prod/*" {
		t.Errorf("rule 1 pattern = %q", got)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"empty", "", []string{"empty"}},
		{"comments only", "# nothing\n", []string{"empty"}},
		{"no rules key", "{}\n", []string{"no rules"}},
		{"rules empty", "rules: []\n", []string{"no rules"}},
		{"rules null", "rules:\n", []string{"no rules"}},
		{"not yaml", "rules: [\n", []string{"policy file"}},
		{"unknown top-level field", "rulez: []\n", []string{"rulez"}},
		{"unknown rule field", "rules:\n  - ids: [\"spiffe://example.org/a\"]\n    method: [GET]\n", []string{"method"}},
		{"rules not a list", "rules: yes\n", []string{"policy file"}},
		{"rule 1 allows everyone", "rules:\n  - methods: [GET]\n", []string{"rule 1", "neither ids nor roles"}},
		{"rule 3 allows everyone", "rules:\n  - ids: [\"spiffe://example.org/a\"]\n  - roles: [r]\n  - paths: [/x]\n", []string{"rule 3", "neither ids nor roles"}},
		{"empty ids and roles lists", "rules:\n  - ids: []\n    roles: []\n", []string{"rule 1", "neither ids nor roles"}},
		{"bad pattern", "rules:\n  - ids: [\"spiffe://example.org/a\"]\n  - ids: [\"spiffe://example.org/a\", \"http://x\"]\n", []string{"rule 2", `"http://x"`, "spiffe://"}},
		{"bad wildcard", "rules:\n  - ids: [\"spiffe://example.org/**/x\"]\n", []string{"rule 1", "** may only end"}},
		{"lower-case method", "rules:\n  - ids: [\"spiffe://example.org/a\"]\n    methods: [get]\n", []string{"rule 1", `"get"`, "upper-case"}},
		{"empty method", "rules:\n  - ids: [\"spiffe://example.org/a\"]\n    methods: [\"\"]\n", []string{"rule 1", "method"}},
		{"method with space", "rules:\n  - ids: [\"spiffe://example.org/a\"]\n    methods: [\"GET /\"]\n", []string{"rule 1", "method"}},
		{"path without slash", "rules:\n  - ids: [\"spiffe://example.org/a\"]\n  - ids: [\"spiffe://example.org/b\"]\n    paths: [reports]\n", []string{"rule 2", `"reports"`, "must start with /"}},
		{"empty role", "rules:\n  - roles: [\"\"]\n", []string{"rule 1", "empty role"}},
		{"ids not strings", "rules:\n  - ids: [{a: b}]\n", []string{"policy file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := authz.Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded with %d rules; want an error", len(p.Rules))
			}
			if p != nil {
				t.Errorf("Parse returned a policy with its error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestDeniedErrorMessages(t *testing.T) {
	conn := &authz.DeniedError{ID: id("spiffe://example.org/a")}
	if got, want := conn.Error(), "spiffe://example.org/a is not authorized by this service's policy"; got != want {
		t.Errorf("connection denial = %q, want %q", got, want)
	}
	req := &authz.DeniedError{ID: id("spiffe://example.org/a"), Method: "POST", Path: "/x"}
	if got, want := req.Error(), "spiffe://example.org/a is not allowed to POST /x"; got != want {
		t.Errorf("request denial = %q, want %q", got, want)
	}
}
