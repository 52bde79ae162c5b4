package agent

import (
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/revocation"
)

// nodeSource presents the node's identity, for the agent's own mTLS to the
// CA (the revocation feed).
type nodeSource struct{ a *Agent }

func (n nodeSource) GetX509SVID() (*x509svid.SVID, error) {
	n.a.mu.RLock()
	defer n.a.mu.RUnlock()
	return &x509svid.SVID{ID: n.a.node.ID, Certificates: n.a.node.Chain, PrivateKey: n.a.node.Key}, nil
}

func (n nodeSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	n.a.mu.RLock()
	defer n.a.mu.RUnlock()
	if td != n.a.node.ID.TrustDomain() {
		return nil, fmt.Errorf("no bundle for %s", td.Name())
	}
	return x509bundle.FromX509Authorities(td, n.a.node.Roots), nil
}

// onRevoke stops serving a revoked workload certificate at once and has the
// next pass obtain a new one, if the entry still grants it.
func (a *Agent) onRevoke(e revocation.Event) {
	a.forgetJWT(e.SPIFFEID)
	a.mu.Lock()
	if a.node != nil && pki.FormatSerial(a.node.Leaf().SerialNumber) == e.Serial {
		a.mu.Unlock()
		a.log.Error("this node's certificate was revoked: it can no longer renew or obtain identities; enroll again with a new token", "node_id", e.SPIFFEID, "serial", e.Serial)
		return
	}
	hit := false
	for id, s := range a.svids {
		if s.id != nil && pki.FormatSerial(s.id.Leaf().SerialNumber) == e.Serial {
			s.id, s.renewAt, s.retryAt, s.failures = nil, time.Time{}, time.Time{}, 0
			os.RemoveAll(a.svidDir(id))
			hit = true
		}
	}
	a.mu.Unlock()
	if hit {
		a.log.Warn("workload certificate revoked: no longer served; obtaining a new one", "spiffe_id", e.SPIFFEID, "serial", e.Serial)
		a.notify()
	}
}
