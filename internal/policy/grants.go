package policy

import (
	"crypto/x509"
	"net"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/pki"
)

// MaxNames bounds the DNS names and IP addresses one certificate carries.
const MaxNames = 100

// DefaultTokenTTL is how long a join token stays usable when its maker
// names no lifetime.
const DefaultTokenTTL = 15 * time.Minute

// MaxRoleLength bounds one role's length.
const MaxRoleLength = 64

// ParseNames checks the DNS names and IP addresses a grant may put in a
// certificate: at most MaxNames in all, DNS names that are host names (not
// IP addresses) and IP addresses that parse. It returns the DNS names in
// lower case and the addresses parsed.
func ParseNames(dnsNames, ipAddresses []string) ([]string, []net.IP, error) {
	if n := len(dnsNames) + len(ipAddresses); n > MaxNames {
		return nil, nil, refuse(CodeBadName, "%d names: a certificate may carry at most %d DNS names and IP addresses", n, MaxNames)
	}
	var dns []string
	for _, n := range dnsNames {
		if net.ParseIP(n) != nil {
			return nil, nil, refuse(CodeBadName, "%q is an IP address: pass it as an IP address (--ip), not a DNS name", n)
		}
		if err := pki.CheckDNSName(n); err != nil {
			return nil, nil, refuse(CodeBadName, "%v", err)
		}
		dns = append(dns, strings.ToLower(n))
	}
	var ips []net.IP
	for _, s := range ipAddresses {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, nil, refuse(CodeBadName, "%q is not an IP address", s)
		}
		ips = append(ips, ip)
	}
	return dns, ips, nil
}

// CheckRoles accepts roles that are one word (no space, tab, newline or
// comma) of 1 to MaxRoleLength characters.
func CheckRoles(roles []string) error {
	for _, r := range roles {
		if r == "" || len(r) > MaxRoleLength || strings.ContainsAny(r, " \t\n,") {
			return refuse(CodeBadRole, "role %q: a role is one word of at most %d characters", r, MaxRoleLength)
		}
	}
	return nil
}

// CheckEntryGrant checks the terms of a registration entry before it is
// stored: an identity an entry may grant, at least one node, each a node ID
// or pattern of this trust domain (spiffe://TD/node/NAME or
// spiffe://TD/node/*), names, roles and a lifetime within the policy.
func (p *Policy) CheckEntryGrant(g Grant, nodes []string) error {
	if err := p.CheckIdentity(g.ID); err != nil {
		return err
	}
	if err := p.CheckGrantable(g.ID, ViaEntry); err != nil {
		return err
	}
	td := p.TrustDomain.Name()
	if len(nodes) == 0 {
		return refuse(CodeBadNode, "an entry needs at least one node (spiffe://%s/node/NAME, or a pattern such as spiffe://%s/node/*)", td, td)
	}
	for _, n := range nodes {
		pat, err := authz.ParsePattern(n)
		if err != nil {
			return refuse(CodeBadNode, "node %v", err)
		}
		if !strings.HasPrefix(n, "spiffe://"+td+"/node/") {
			return refuse(CodeBadNode, "node %s: nodes are spiffe://%s/node/NAME", pat, td)
		}
	}
	if _, _, err := ParseNames(g.DNSNames, nil); err != nil {
		return err
	}
	if err := CheckRoles(g.Roles); err != nil {
		return err
	}
	return p.checkCertTTL(g.TTL)
}

// CheckNodeID accepts a node identity, spiffe://TD/node/NAME, as the target
// of a node revocation.
func CheckNodeID(id spiffeid.ID) error {
	if pki.KindOf(id) != pki.KindNode {
		return refuse(CodeBadNode, "%s is not a node identity (spiffe://%s/node/NAME)", id, id.TrustDomain().Name())
	}
	return nil
}

// RenewalGrant is what renewing peer, a certificate of id this CA issued
// and has not revoked, entitles to: the same identity, names and roles, and
// a lifetime no longer than peer's (without its back-dating) nor the policy
// maximum.
func (p *Policy) RenewalGrant(id spiffeid.ID, peer *x509.Certificate, roles []string) Grant {
	lifetime := peer.NotAfter.Sub(peer.NotBefore) - pki.ClockSkew
	return Grant{ID: id, DNSNames: peer.DNSNames, IPAddresses: peer.IPAddresses, TTL: min(lifetime, p.MaxTTL), Roles: roles, Via: ViaRenewal}
}
