package proxy

import (
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/authz"
)

// PartnerSource supplies the partnerships in force and hears of the
// partners' peers the proxy sees (for `mutual partner show`'s last seen).
// Partners must return a new *authz.Partners for every change, never edit
// one in place: a connection keeps its decision until the value changes.
type PartnerSource interface {
	Partners() *authz.Partners
	// Seen records that the partner's peer id made a connection or request.
	Seen(id spiffeid.ID)
}

// partnerDecision is what one connection's peer may reach as a partner's,
// decided once per value of the partnerships in force.
type partnerDecision struct {
	from    *authz.Partners
	partner bool
	scope   *authz.Scope // nil: nothing
	// service: the scope reaches the service behind this proxy.
	service bool
}

func (p *Inbound) partnersNow() *authz.Partners {
	if p.cfg.Partners == nil {
		return nil
	}
	return p.cfg.Partners.Partners()
}

// checkPartner refuses a request (method "" for a whole connection) that
// lies outside the scope of the peer's partnership, if the peer is a
// partner's. The decision is cached in d for the connection until the
// partnerships change, so a peer that is no partner's costs two loads.
func (p *Inbound) checkPartner(d *atomic.Pointer[partnerDecision], id spiffeid.ID, method, path string) error {
	now := p.partnersNow()
	dec := d.Load()
	if dec == nil || dec.from != now {
		dec = p.decidePartner(now, id)
		d.Store(dec)
	}
	if !dec.partner {
		return nil
	}
	if p.cfg.Partners != nil {
		p.cfg.Partners.Seen(id)
	}
	switch {
	case dec.scope == nil:
		return &authz.OutOfScopeError{ID: id, Method: method, Path: path, Reason: "no partnership in force covers it (ended, unknown, or not learnt from the CA yet)"}
	case !dec.service:
		return &authz.OutOfScopeError{ID: id, Method: method, Path: path, Reason: "its partnership's scope does not name this service"}
	case !dec.scope.AllowsRequest(method, path):
		reason := "its partnership's scope does not reach this method and path"
		if method == "" {
			reason = "its partnership's scope names methods and paths, which a tcp-mode proxy cannot judge"
		}
		return &authz.OutOfScopeError{ID: id, Method: method, Path: path, Reason: reason}
	}
	return nil
}

// decidePartner decides what id may reach under ps at this proxy's
// service; without the proxy's own identity, a partner reaches nothing.
func (p *Inbound) decidePartner(ps *authz.Partners, id spiffeid.ID) *partnerDecision {
	dec := &partnerDecision{from: ps}
	own, err := p.cfg.SVID.GetX509SVID()
	if err != nil {
		dec.partner = true
		return dec
	}
	dec.scope, dec.partner = ps.Scope(own.ID.TrustDomain(), id)
	dec.service = dec.scope.AllowsService(own.ID)
	return dec
}

// CloseOutOfScope closes the live tcp-mode connections of partners' peers
// that the partnerships in force no longer let in (a narrowed scope, a
// partnership gone); http mode judges the next request instead. It
// returns how many it closed.
func (p *Inbound) CloseOutOfScope() int {
	if p.cfg.Protocol != TCP {
		return 0
	}
	return p.closeMatching(func(id spiffeid.ID, _ string) bool {
		var d atomic.Pointer[partnerDecision]
		return p.checkPartner(&d, id, "", "") != nil
	}, closedByPartnerScope)
}
