package policy_test

import (
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/policy"
)

func TestParseNames(t *testing.T) {
	many := make([]string, policy.MaxNames+1)
	for i := range many {
		many[i] = fmt.Sprintf("h%d.example.org", i)
	}
	tests := []struct {
		name     string
		dns, ips []string
		wantDNS  []string
		wantIPs  []net.IP
		refused  bool
	}{
		{name: "none"},
		{name: "lower-cased", dns: []string{"Web.Example.ORG"}, ips: []string{"10.0.0.1", "2001:db8::1"},
			wantDNS: []string{"web.example.org"}, wantIPs: []net.IP{net.ParseIP("10.0.0.1"), net.ParseIP("2001:db8::1")}},
		{name: "an IP address as a DNS name", dns: []string{"10.0.0.1"}, refused: true},
		{name: "not a host name", dns: []string{"web example.org"}, refused: true},
		{name: "not an IP address", ips: []string{"10.0.0.256"}, refused: true},
		{name: "too many", dns: many, refused: true},
		{name: "too many in all", dns: many[:policy.MaxNames], ips: []string{"10.0.0.1"}, refused: true},
		{name: "exactly the most", dns: many[:policy.MaxNames], wantDNS: many[:policy.MaxNames]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dns, ips, err := policy.ParseNames(tt.dns, tt.ips)
			if tt.refused {
				wantRefused(t, err, policy.CodeBadName)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(dns, tt.wantDNS) || !slices.EqualFunc(ips, tt.wantIPs, net.IP.Equal) {
				t.Errorf("ParseNames = %q %v, want %q %v", dns, ips, tt.wantDNS, tt.wantIPs)
			}
		})
	}
}

func TestCheckRoles(t *testing.T) {
	tests := []struct {
		roles []string
		ok    bool
	}{
		{nil, true},
		{[]string{"reader", "db-admin"}, true},
		{[]string{strings.Repeat("r", policy.MaxRoleLength)}, true},
		{[]string{strings.Repeat("r", policy.MaxRoleLength+1)}, false},
		{[]string{""}, false},
		{[]string{"two words"}, false},
		{[]string{"a,b"}, false},
		{[]string{"tab\there"}, false},
		{[]string{"ok", "new\nline"}, false},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.roles, "|"), func(t *testing.T) {
			err := policy.CheckRoles(tt.roles)
			if tt.ok {
				if err != nil {
					t.Errorf("CheckRoles(%q) = %v, want accepted", tt.roles, err)
				}
				return
			}
			wantRefused(t, err, policy.CodeBadRole)
		})
	}
}

func TestCheckEntryGrant(t *testing.T) {
	p := testPolicy()
	node := []string{"spiffe://example.org/node/n1"}
	tests := []struct {
		name  string
		id    string
		nodes []string
		dns   []string
		roles []string
		ttl   time.Duration
		want  policy.Code // empty: accepted
	}{
		{name: "workload on one node", id: "spiffe://example.org/ns/prod/web", nodes: node},
		{name: "workload on every node", id: "spiffe://example.org/ns/prod/web", nodes: []string{"spiffe://example.org/node/*"},
			dns: []string{"web.example.org"}, roles: []string{"reader"}, ttl: 24 * time.Hour},
		{name: "an operator", id: "spiffe://example.org/admin/alice", nodes: node, want: policy.CodeReservedIdentity},
		{name: "a node", id: "spiffe://example.org/node/n2", nodes: node, want: policy.CodeReservedIdentity},
		{name: "the CA", id: "spiffe://example.org/mutual/server", nodes: node, want: policy.CodeReservedIdentity},
		{name: "another trust domain", id: "spiffe://other.org/web", nodes: node, want: policy.CodeForeignTrustDomain},
		{name: "no node", id: "spiffe://example.org/web", want: policy.CodeBadNode},
		{name: "a workload as node", id: "spiffe://example.org/web", nodes: []string{"spiffe://example.org/ns/prod/db"}, want: policy.CodeBadNode},
		{name: "a node of another trust domain", id: "spiffe://example.org/web", nodes: []string{"spiffe://other.org/node/n1"}, want: policy.CodeBadNode},
		{name: "not a pattern", id: "spiffe://example.org/web", nodes: []string{"node n1"}, want: policy.CodeBadNode},
		{name: "bad DNS name", id: "spiffe://example.org/web", nodes: node, dns: []string{"-bad-.example.org!"}, want: policy.CodeBadName},
		{name: "bad role", id: "spiffe://example.org/web", nodes: node, roles: []string{"two words"}, want: policy.CodeBadRole},
		{name: "lifetime above the maximum", id: "spiffe://example.org/web", nodes: node, ttl: 25 * time.Hour, want: policy.CodeLifetime},
		{name: "negative lifetime", id: "spiffe://example.org/web", nodes: node, ttl: -time.Second, want: policy.CodeLifetime},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := policy.Grant{ID: spiffeid.RequireFromString(tt.id), DNSNames: tt.dns, Roles: tt.roles, TTL: tt.ttl}
			err := p.CheckEntryGrant(g, tt.nodes)
			if tt.want == "" {
				if err != nil {
					t.Errorf("CheckEntryGrant = %v, want accepted", err)
				}
				return
			}
			wantRefused(t, err, tt.want)
		})
	}
}

func TestCheckNodeID(t *testing.T) {
	if err := policy.CheckNodeID(spiffeid.RequireFromString("spiffe://example.org/node/n1")); err != nil {
		t.Errorf("a node refused: %v", err)
	}
	for _, id := range []string{"spiffe://example.org/ns/node/n1", "spiffe://example.org/admin/alice", "spiffe://example.org/web"} {
		wantRefused(t, policy.CheckNodeID(spiffeid.RequireFromString(id)), policy.CodeBadNode)
	}
}

// TestRenewalGrant: a renewal keeps the identity, names and roles, and never
// outlives the certificate renewed (without its back-dating) nor the policy
// maximum.
func TestRenewalGrant(t *testing.T) {
	p := testPolicy()
	now := time.Now()
	for _, tt := range []struct {
		life, want time.Duration
	}{
		{time.Hour, time.Hour},
		{10 * time.Minute, 10 * time.Minute},
		{48 * time.Hour, p.MaxTTL},
	} {
		t.Run(tt.life.String(), func(t *testing.T) {
			peer := &x509.Certificate{NotBefore: now.Add(-pki.ClockSkew), NotAfter: now.Add(tt.life),
				DNSNames: []string{"web.example.org"}, IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}}
			g := p.RenewalGrant(webID, peer, []string{"reader"})
			if g.ID != webID || g.Via != policy.ViaRenewal || !slices.Equal(g.DNSNames, peer.DNSNames) ||
				!slices.EqualFunc(g.IPAddresses, peer.IPAddresses, net.IP.Equal) || !slices.Equal(g.Roles, []string{"reader"}) {
				t.Errorf("RenewalGrant = %+v, want the peer's identity, names and roles by renewal", g)
			}
			if g.TTL != tt.want {
				t.Errorf("TTL = %s, want %s", g.TTL, tt.want)
			}
		})
	}
}
