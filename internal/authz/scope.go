package authz

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/pki"
)

// Scope is what a partnership may reach: which services (by the SPIFFE ID
// the service's inbound proxy holds) and, for HTTP, which methods and
// paths. It narrows what a service's own policy allows: a partner's request
// passes only when both allow it. The zero Scope reaches nothing.
type Scope struct {
	// Services are the services reachable; none means no service.
	Services []Pattern
	// Requests are the methods and paths reachable on those services; none
	// means every request (and, in tcp mode, whole connections).
	Requests []RequestRule
}

// RequestRule is one method-and-path rule of a scope, written
// "METHODS PATH": "GET /v1/orders/", "GET,HEAD /reports*", "* /status".
// METHODS is "*" (any) or upper-case methods separated by commas; PATH is
// a path rule as in the package documentation.
type RequestRule struct {
	raw     string
	methods []string // nil: any method
	path    string
}

// ParseRequestRule parses "METHODS PATH".
func ParseRequestRule(s string) (RequestRule, error) {
	ms, path, ok := strings.Cut(strings.TrimSpace(s), " ")
	path = strings.TrimSpace(path)
	if !ok || ms == "" || path == "" {
		return RequestRule{}, fmt.Errorf("request rule %q: write METHODS PATH, such as \"GET /v1/orders/\" or \"* /status\"", s)
	}
	r := RequestRule{raw: ms + " " + path, path: path}
	if ms != "*" {
		for m := range strings.SplitSeq(ms, ",") {
			if err := checkMethod(m); err != nil {
				return RequestRule{}, fmt.Errorf("request rule %q: %w", s, err)
			}
			r.methods = append(r.methods, m)
		}
	}
	if reason := checkPathRule(path); reason != "" {
		return RequestRule{}, fmt.Errorf("request rule %q: path %q: %s", s, path, reason)
	}
	return r, nil
}

// String returns the rule as "METHODS PATH".
func (r RequestRule) String() string { return r.raw }

func (r *RequestRule) allows(method, path string) bool {
	return (r.methods == nil || slices.Contains(r.methods, method)) && pathMatches(r.path, path)
}

// checkMethod accepts an upper-case HTTP method such as GET.
func checkMethod(m string) error {
	if m == "" || strings.ToUpper(m) != m || strings.ContainsAny(m, " /*,") {
		return fmt.Errorf("method %q must be an upper-case HTTP method such as GET", m)
	}
	return nil
}

// ParseScope parses a scope from its service patterns and request rules.
// It needs at least one service: a scope that reaches nothing is refused
// rather than stored.
func ParseScope(services, requests []string) (Scope, error) {
	var s Scope
	if len(services) == 0 {
		return s, fmt.Errorf("a scope names at least one service it may reach (spiffe://TD/ns/prod/api, or spiffe://TD/ns/prod/** for a namespace)")
	}
	for _, v := range services {
		p, err := ParsePattern(v)
		if err != nil {
			return Scope{}, fmt.Errorf("service %w", err)
		}
		s.Services = append(s.Services, p)
	}
	for _, v := range requests {
		r, err := ParseRequestRule(v)
		if err != nil {
			return Scope{}, err
		}
		s.Requests = append(s.Requests, r)
	}
	return s, nil
}

// AllowsService reports whether the scope reaches the service whose proxy
// holds id.
func (s *Scope) AllowsService(id spiffeid.ID) bool {
	return s != nil && slices.ContainsFunc(s.Services, func(p Pattern) bool { return p.Match(id) })
}

// AllowsRequest reports whether the scope reaches method and path (decoded,
// as CheckPath returns it). Outside HTTP (method ""), only a scope without
// request rules reaches a connection.
func (s *Scope) AllowsRequest(method, path string) bool {
	if s == nil {
		return false
	}
	if len(s.Requests) == 0 {
		return true
	}
	if method == "" {
		return false
	}
	for i := range s.Requests {
		if s.Requests[i].allows(method, path) {
			return true
		}
	}
	return false
}

// Partnership is one partnership as an inbound proxy enforces it.
type Partnership struct {
	// Name is the partnership's: its identities in the proxy's trust domain
	// are spiffe://TD/partner/NAME/...
	Name string
	// TrustDomain is the partner's own federated trust domain, or zero.
	TrustDomain spiffeid.TrustDomain
	Scope       Scope
}

// Partners is the set of partnerships in force at a proxy. Every identity
// under spiffe://TD/partner/ of the proxy's trust domain is a partner's,
// and so is every identity of a partnership's trust domain; such a peer
// reaches only its partnership's scope, and nothing when its partnership is
// not known (ended, or never created): fail closed. A nil *Partners knows
// no partnership. A *Partners is never changed once made: a change is a new
// value (proxies cache decisions per connection until the value changes).
type Partners struct {
	byName map[string]*Scope
	byTD   map[spiffeid.TrustDomain]*Scope
	// unknown: the partnerships are not known yet; every peer of another
	// trust domain may be a partner's, so it reaches nothing.
	unknown bool
}

// NewPartners makes the set of partnerships in force.
func NewPartners(list []Partnership) *Partners {
	ps := &Partners{byName: map[string]*Scope{}, byTD: map[spiffeid.TrustDomain]*Scope{}}
	for _, p := range list {
		s := p.Scope
		ps.byName[p.Name] = &s
		if !p.TrustDomain.IsZero() {
			ps.byTD[p.TrustDomain] = &s
		}
	}
	return ps
}

// PartnersUnknown is what a proxy enforces before it has learnt the
// partnerships: no partner identity, and no peer of another trust domain,
// reaches anything.
func PartnersUnknown() *Partners { return &Partners{unknown: true} }

// Scope returns the scope that bounds peer id at a service of trust domain
// own, and whether id is a partner's at all. A partner's peer with a nil
// scope reaches nothing.
func (ps *Partners) Scope(own spiffeid.TrustDomain, id spiffeid.ID) (*Scope, bool) {
	if id.TrustDomain() == own {
		name, ok := pki.PartnerName(id)
		if !ok || ps == nil {
			return nil, ok
		}
		return ps.byName[name], true
	}
	if ps == nil {
		return nil, false
	}
	if ps.unknown {
		return nil, true
	}
	s, ok := ps.byTD[id.TrustDomain()]
	return s, ok
}

// OutOfScopeError refuses a partner's peer what its partnership does not
// reach, whatever the service's policy allows.
type OutOfScopeError struct {
	ID     spiffeid.ID
	Method string
	Path   string
	// Reason says which part of the scope refused, in words.
	Reason string
}

func (e *OutOfScopeError) Error() string {
	if e.Method != "" {
		return fmt.Sprintf("%s is a partner's identity and may not %s %s: %s", e.ID, e.Method, e.Path, e.Reason)
	}
	return fmt.Sprintf("%s is a partner's identity: %s", e.ID, e.Reason)
}
