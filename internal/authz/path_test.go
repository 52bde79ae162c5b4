package authz_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/authz"
)

// TestPathRuleSegmentBoundary: a path rule without a wildcard matches on
// segment boundaries, so the README's /metrics rule does not also allow
// /metrics-secret-admin; a trailing * keeps a raw prefix for whoever wants one.
func TestPathRuleSegmentBoundary(t *testing.T) {
	tests := []struct {
		rule, path string
		want       bool
	}{
		{"/metrics", "/metrics", true},
		{"/metrics", "/metrics/", true},
		{"/metrics", "/metrics/cpu", true},
		{"/metrics", "/metrics-secret-admin", false},
		{"/metrics", "/metricsx", false},
		{"/metrics", "/metrics;x", false},
		{"/metrics", "/metric", false},
		{"/metrics", "/", false},
		{"/reports/", "/reports/", true},
		{"/reports/", "/reports/q1", true},
		{"/reports/", "/reports", false},
		{"/reports/", "/reports-x/q1", false},
		{"/", "/", true},
		{"/", "/anything/at/all", true},
		{"/api/v1", "/api/v1/users", true},
		{"/api/v1", "/api/v10", false},
		{"/metrics*", "/metrics-secret-admin", true},
		{"/metrics*", "/metrics", true},
		{"/metrics*", "/metric", false},
		{"/*", "/x", true},
	}
	for _, tt := range tests {
		t.Run(tt.rule+" ~ "+tt.path, func(t *testing.T) {
			p, err := authz.Parse([]byte("rules:\n  - roles: [r]\n    paths: [\"" + tt.rule + "\"]\n"))
			if err != nil {
				t.Fatal(err)
			}
			err = p.Allow(authz.Request{ID: id("spiffe://example.org/a"), Roles: []string{"r"}, Method: "GET", Path: tt.path})
			if (err == nil) != tt.want {
				t.Fatalf("rule %s, GET %s: Allow = %v, want allowed=%v", tt.rule, tt.path, err, tt.want)
			}
		})
	}
}

// TestParsePathRuleErrors: a path rule is a plain, decoded, canonical path
// (with at most a final *), or the file is refused with the reason.
func TestParsePathRuleErrors(t *testing.T) {
	for _, tt := range []struct{ rule, want string }{
		{"/a*b", "only at the end"},
		{"/a/../b", "dot segments"},
		{"/a/./b", "dot segments"},
		{"/a//b", "empty segment"},
		{`/a\b`, "backslash"},
		{"/a%2fb", "decoded"},
		{"/a;b", ";"},
		{"/a?b", "?"},
	} {
		t.Run(tt.rule, func(t *testing.T) {
			_, err := authz.Parse([]byte("rules:\n  - roles: [r]\n    paths: ['" + tt.rule + "']\n"))
			if err == nil {
				t.Fatalf("rule %q accepted", tt.rule)
			}
			for _, w := range []string{"rule 1", fmt.Sprintf("%q", tt.rule), tt.want} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// pathAttacks are request paths (as sent, still percent-encoded) that some
// server reads as another path than the literal one: Tomcat and Jetty drop
// ";params" before resolving "..", IIS and some frameworks decode twice or
// fold overlong UTF-8 and full-width dots, Windows servers take "\" for "/".
var pathAttacks = []string{
	"/public/..;/admin",
	"/public/..;x=1/admin",
	"/public/.;/admin",
	"/public;/../admin",
	"/public/%2e%2e/admin",
	"/public/%2E%2E/admin",
	"/public/%252e%252e/admin",
	"/public/%252e%252e%252fadmin",
	"/public/..%252fadmin",
	"/public/%25252e%25252e/admin",
	"/public/%c0%ae%c0%ae/admin",
	"/public/%c0%ae%c0%ae%c0%afadmin",
	"/public/%e0%80%ae%e0%80%ae/admin",
	"/public/%ef%bc%8e%ef%bc%8e/admin", // full-width full stops
	"/public/..%ef%bc%8fadmin",         // full-width solidus
	"/public%2fadmin",
	"/public%2F..%2Fadmin",
	"/public/..%2fadmin",
	"/public/..%5cadmin",
	`/public/..\admin`,
	`/public\..\admin`,
	"/public/../admin",
	"/public/./../admin",
	"/public//admin",
	"/public/...",
	"/public/.. /admin",
	"/public/..%20/admin",
	"/public/x%00/admin",
	"/public/x%0a/admin",
	"/public/%ff",
	"/public/..;%2f../admin",
}

// TestCheckPathRefusesConfusion: every path above is refused with a reason;
// ordinary paths (matrix parameters, UTF-8, a literal %) pass, decoded.
func TestCheckPathRefusesConfusion(t *testing.T) {
	for _, p := range pathAttacks {
		t.Run(p, func(t *testing.T) {
			got, err := authz.CheckPath(p)
			if err == nil {
				t.Fatalf("CheckPath(%q) = %q, nil; want it refused", p, got)
			}
			var pe *authz.PathError
			if !errors.As(err, &pe) || pe.Path != p || pe.Reason == "" {
				t.Errorf("error %v (%T) is not a *PathError for %q with a reason", err, err, p)
			}
		})
	}
	for _, tt := range []struct{ in, want string }{
		{"/", "/"},
		{"/public/", "/public/"},
		{"/public/a;v=1/b", "/public/a;v=1/b"},
		{"/public/caf%C3%A9", "/public/café"},
		{"/public/café", "/public/café"},
		{"/public/100%25.txt", "/public/100%.txt"},
		{"/public/a%20b", "/public/a b"},
		{"/public/.well-known/x", "/public/.well-known/x"},
		{"/public/a..b", "/public/a..b"},
		{"/public/a%3Fb", "/public/a?b"},
		{"*", "*"},
	} {
		got, err := authz.CheckPath(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("CheckPath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}
