package pki

import (
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Kind is what a SPIFFE ID stands for in mutual's naming. KindOf is the one
// place that decides it: the CA's authorization, its issuance policy, the
// log monitor and the clients all ask it instead of looking for substrings.
type Kind int

// The kinds of identity. The zero value is a workload.
const (
	// KindWorkload is any identity not named below: spiffe://TD/ns/prod/web.
	KindWorkload Kind = iota
	// KindAdmin is an operator: spiffe://TD/admin/NAME (the first path
	// segment is exactly "admin").
	KindAdmin
	// KindNode is a node agent: spiffe://TD/node/NAME.
	KindNode
	// KindServer is the CA service itself: spiffe://TD/mutual/server.
	KindServer
	// KindPartner is a partner organisation's identity: spiffe://TD/partner/ORG/...
	KindPartner
	// KindReserved is a name no one may hold: any other path under /mutual/,
	// and a bare /admin, /node or /partner with no name after it.
	KindReserved
)

// String names the kind in messages and logs.
func (k Kind) String() string {
	switch k {
	case KindAdmin:
		return "operator"
	case KindNode:
		return "node"
	case KindServer:
		return "CA server"
	case KindPartner:
		return "partner"
	case KindReserved:
		return "reserved"
	}
	return "workload"
}

// Reserved path segments: the first segment of an ID's path decides its kind.
const (
	adminSegment   = "admin"
	nodeSegment    = "node"
	partnerSegment = "partner"
	mutualSegment  = "mutual"
	serverSegment  = "server"
)

// KindOf says what id stands for, by its path's first segment (compared
// exactly: /ns/admin/x is a workload, /Admin/x too). It does not look at the
// trust domain; callers compare that themselves.
func KindOf(id spiffeid.ID) Kind {
	p := strings.TrimPrefix(id.Path(), "/")
	first, rest, more := strings.Cut(p, "/")
	switch first {
	case adminSegment, nodeSegment, partnerSegment:
		if !more || rest == "" {
			return KindReserved
		}
		switch first {
		case adminSegment:
			return KindAdmin
		case nodeSegment:
			return KindNode
		}
		return KindPartner
	case mutualSegment:
		if rest == serverSegment {
			return KindServer
		}
		return KindReserved
	}
	return KindWorkload
}

// ServerID is the CA service's own identity in trust domain td,
// spiffe://TD/mutual/server: clients accept the CA by this ID only, and no
// token or entry can grant it.
func ServerID(td spiffeid.TrustDomain) spiffeid.ID {
	id, _ := spiffeid.FromSegments(td, mutualSegment, serverSegment)
	return id
}

// AdminID is the operator identity spiffe://TD/admin/NAME.
func AdminID(td spiffeid.TrustDomain, name string) (spiffeid.ID, error) {
	return spiffeid.FromSegments(td, adminSegment, name)
}

// NodeID is the node identity spiffe://TD/node/NAME.
func NodeID(td spiffeid.TrustDomain, name string) (spiffeid.ID, error) {
	return spiffeid.FromSegments(td, nodeSegment, name)
}

// PartnerName returns the partnership a partner identity belongs to: ORG
// of spiffe://TD/partner/ORG/... It reports false for any other kind.
func PartnerName(id spiffeid.ID) (string, bool) {
	if KindOf(id) != KindPartner {
		return "", false
	}
	name, _, _ := strings.Cut(strings.TrimPrefix(id.Path(), "/"+partnerSegment+"/"), "/")
	return name, true
}
