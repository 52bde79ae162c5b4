// Package authz decides whether a peer may talk to a service: by SPIFFE ID
// pattern, by role, and for HTTP by method and path. Policies come
// from --allow flags and a YAML file that reloads on change.
//
// # Patterns
//
//	spiffe://example.org/ns/prod/web   exactly this identity
//	spiffe://example.org/ns/prod/*     one path segment in place of *
//	spiffe://example.org/ns/**         one or more segments below ns
//	spiffe://example.org/**            anyone in the trust domain
//
// A pattern names one trust domain: a peer of a federated trust domain is
// admitted only by a pattern naming that domain (and the inbound proxy does
// not read roles from such a peer's certificate).
//
// # Policy file
//
//	rules:
//	  - ids: ["spiffe://example.org/ns/prod/*"]
//	  - roles: ["auditor"]
//	    methods: ["GET", "HEAD"]
//	    paths: ["/reports/"]
//
// A request is allowed when any rule matches. A rule matches when the peer's
// identity matches one of its ids (if any are listed), the peer holds one of
// its roles (if any), and, for HTTP, the method is listed (if any) and the
// path matches one of its paths (if any). A rule must list ids or roles, so
// that no rule allows everyone by accident.
//
// # Paths
//
// Paths match whole segments of the decoded request path:
//
//	/metrics    /metrics and everything below /metrics/ (not /metrics-admin)
//	/reports/   everything below /reports/ (not /reports itself)
//	/metrics*   any path that starts with /metrics: a raw prefix, on purpose
//
// A path rule is written decoded and canonical: no dot or empty segments, no
// ';', '?', '#', '\' or percent-encoding, '*' only at the end. Requests are
// judged by CheckPath first, which refuses paths that servers read in
// different ways.
package authz

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.yaml.in/yaml/v3"
)

// Pattern matches SPIFFE IDs; see the package documentation.
type Pattern struct {
	raw      string
	td       spiffeid.TrustDomain
	segments []string
}

// ParsePattern parses a SPIFFE ID pattern.
func ParsePattern(s string) (Pattern, error) {
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return Pattern{}, fmt.Errorf("pattern %q must start with spiffe://", s)
	}
	tdName, path, _ := strings.Cut(rest, "/")
	td, err := spiffeid.TrustDomainFromString(tdName)
	if err != nil {
		return Pattern{}, fmt.Errorf("pattern %q: trust domain: %w", s, err)
	}
	p := Pattern{raw: s, td: td}
	if path == "" {
		return Pattern{}, fmt.Errorf("pattern %q has no path: write spiffe://%s/** for the whole trust domain", s, tdName)
	}
	p.segments = strings.Split(path, "/")
	for i, seg := range p.segments {
		switch {
		case seg == "**" && i != len(p.segments)-1:
			return Pattern{}, fmt.Errorf("pattern %q: ** may only end a pattern", s)
		case seg == "*" || seg == "**":
		case seg == "" || strings.ContainsAny(seg, "*"):
			return Pattern{}, fmt.Errorf("pattern %q: segment %q: use a whole segment, * or **", s, seg)
		default:
			if _, err := spiffeid.FromSegments(td, seg); err != nil {
				return Pattern{}, fmt.Errorf("pattern %q: segment %q: %w", s, seg, err)
			}
		}
	}
	return p, nil
}

// String returns the pattern as written.
func (p Pattern) String() string { return p.raw }

// TrustDomain returns the one trust domain the pattern names.
func (p Pattern) TrustDomain() spiffeid.TrustDomain { return p.td }

// Match reports whether id matches the pattern.
func (p Pattern) Match(id spiffeid.ID) bool {
	if id.TrustDomain() != p.td {
		return false
	}
	segs := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if id.Path() == "" {
		segs = nil
	}
	for i, want := range p.segments {
		if want == "**" {
			return len(segs) > i
		}
		if i >= len(segs) || (want != "*" && want != segs[i]) {
			return false
		}
	}
	return len(segs) == len(p.segments)
}

// Rule is one allow rule.
type Rule struct {
	IDs     []Pattern
	Roles   []string
	Methods []string
	Paths   []string
}

// Policy is a list of allow rules; the zero value allows nobody.
type Policy struct {
	Rules []Rule
}

// Request is what is being authorized. Method and Path are empty outside
// HTTP; Path is decoded, as CheckPath returns it.
type Request struct {
	ID     spiffeid.ID
	Roles  []string
	Method string
	Path   string
}

// DeniedError says why a request was refused.
type DeniedError struct {
	ID     spiffeid.ID
	Method string
	Path   string
}

func (e *DeniedError) Error() string {
	if e.Method != "" {
		return fmt.Sprintf("%s is not allowed to %s %s", e.ID, e.Method, e.Path)
	}
	return fmt.Sprintf("%s is not authorized by this service's policy", e.ID)
}

// Allow returns nil when some rule allows r, else a *DeniedError. In
// connection-level checks (no method), a rule restricted to methods or
// paths does not apply.
func (p *Policy) Allow(r Request) error {
	for _, rule := range p.Rules {
		if rule.matches(r) {
			return nil
		}
	}
	return &DeniedError{ID: r.ID, Method: r.Method, Path: r.Path}
}

// AllowsAnyRequest reports whether some rule could allow id (ignoring
// methods and paths): the connection-level test in HTTP mode, where the
// per-request check comes later.
func (p *Policy) AllowsAnyRequest(id spiffeid.ID, roles []string) bool {
	for _, rule := range p.Rules {
		if rule.identityMatches(id, roles) {
			return true
		}
	}
	return false
}

func (r *Rule) identityMatches(id spiffeid.ID, roles []string) bool {
	if len(r.IDs) > 0 && !slices.ContainsFunc(r.IDs, func(p Pattern) bool { return p.Match(id) }) {
		return false
	}
	if len(r.Roles) > 0 && !slices.ContainsFunc(r.Roles, func(role string) bool { return slices.Contains(roles, role) }) {
		return false
	}
	return true
}

func (r *Rule) matches(req Request) bool {
	if !r.identityMatches(req.ID, req.Roles) {
		return false
	}
	if req.Method == "" {
		return len(r.Methods) == 0 && len(r.Paths) == 0
	}
	if len(r.Methods) > 0 && !slices.Contains(r.Methods, req.Method) {
		return false
	}
	if len(r.Paths) > 0 && !slices.ContainsFunc(r.Paths, func(p string) bool { return pathMatches(p, req.Path) }) {
		return false
	}
	return true
}

// FromPatterns makes a policy with one rule per --allow pattern.
func FromPatterns(patterns []string) (*Policy, error) {
	p := &Policy{}
	for _, s := range patterns {
		pat, err := ParsePattern(s)
		if err != nil {
			return nil, err
		}
		p.Rules = append(p.Rules, Rule{IDs: []Pattern{pat}})
	}
	return p, nil
}

type fileRule struct {
	IDs     []string `yaml:"ids"`
	Roles   []string `yaml:"roles"`
	Methods []string `yaml:"methods"`
	Paths   []string `yaml:"paths"`
}

type file struct {
	Rules []fileRule `yaml:"rules"`
}

// Parse reads a YAML policy file's contents. Errors name the rule at fault.
func Parse(data []byte) (*Policy, error) {
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the policy file is empty: list rules under \"rules:\"")
		}
		return nil, fmt.Errorf("policy file: %w", err)
	}
	p := &Policy{}
	for i, fr := range f.Rules {
		n := i + 1
		if len(fr.IDs) == 0 && len(fr.Roles) == 0 {
			return nil, fmt.Errorf("policy rule %d lists neither ids nor roles: a rule must say whom it allows", n)
		}
		r := Rule{Roles: fr.Roles, Paths: fr.Paths}
		for _, s := range fr.IDs {
			pat, err := ParsePattern(s)
			if err != nil {
				return nil, fmt.Errorf("policy rule %d: %w", n, err)
			}
			r.IDs = append(r.IDs, pat)
		}
		for _, m := range fr.Methods {
			if m == "" || strings.ToUpper(m) != m || strings.ContainsAny(m, " /") {
				return nil, fmt.Errorf("policy rule %d: method %q must be an upper-case HTTP method such as GET", n, m)
			}
			r.Methods = append(r.Methods, m)
		}
		for _, pth := range fr.Paths {
			if reason := checkPathRule(pth); reason != "" {
				return nil, fmt.Errorf("policy rule %d: path %q: %s", n, pth, reason)
			}
		}
		for _, role := range fr.Roles {
			if role == "" {
				return nil, fmt.Errorf("policy rule %d: empty role", n)
			}
		}
		p.Rules = append(p.Rules, r)
	}
	if len(p.Rules) == 0 {
		return nil, errors.New("the policy file has no rules: list them under \"rules:\"")
	}
	return p, nil
}

// Merge returns a policy holding the rules of both.
func Merge(a, b *Policy) *Policy {
	out := &Policy{}
	if a != nil {
		out.Rules = append(out.Rules, a.Rules...)
	}
	if b != nil {
		out.Rules = append(out.Rules, b.Rules...)
	}
	return out
}
