package agent

import (
	"context"
	"crypto/x509"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// federatedPoll is how often the agent asks the CA for the federated
// bundles while Workload API streams, SDS streams or --write directories
// follow them: twice the entry sync interval (10 seconds by default), and
// at most every sync interval however many follow them.
func (a *Agent) federatedPoll() time.Duration { return 2 * a.cfg.SyncInterval }

// federatedSet is what the agent holds of the federated trust domains: the
// X.509 roots of each and, where the CA has them, its JWT authorities. The
// agent's own trust domain is never in it.
type federatedSet struct {
	roots map[spiffeid.TrustDomain][]*x509.Certificate
	jwt   map[spiffeid.TrustDomain]*jwtbundle.Bundle
}

// der is the roots of each trust domain as the Workload API sends them
// (federated_bundles): by trust domain ID, concatenated DER.
func (f federatedSet) der() map[string][]byte {
	out := make(map[string][]byte, len(f.roots))
	for td, roots := range f.roots {
		out[td.IDString()] = chainDER(roots)
	}
	return out
}

// equal tells whether f and g hold the same keys.
func (f federatedSet) equal(g federatedSet) bool {
	return maps.EqualFunc(f.der(), g.der(), sameBytes) &&
		maps.EqualFunc(f.jwt, g.jwt, (*jwtbundle.Bundle).Equal)
}

// fingerprint is a short text that changes whenever the set does (for a
// writer to tell whether a directory is current).
func (f federatedSet) fingerprint() string {
	der := f.der()
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(der)) {
		b.WriteString(k)
		b.Write(der[k])
	}
	return b.String()
}

// federatedCache holds the federated trust domains' bundles as the CA last
// gave them: the last good answer stays while the CA is unreachable, and
// no Workload API answer waits for the CA.
type federatedCache struct {
	mu       sync.Mutex
	fetched  time.Time
	fetching bool
	set      federatedSet
	changed  chan struct{} // closed and replaced when the set changes
}

// federated returns the federated bundles known now, and a channel closed
// when they change; it starts a fetch from the CA when they are due.
func (a *Agent) federated() (federatedSet, <-chan struct{}) {
	c := &a.fed
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.changed == nil {
		c.changed = make(chan struct{})
	}
	if !c.fetching && (c.fetched.IsZero() || time.Since(c.fetched) >= a.federatedPoll()/2) {
		c.fetching = true
		go a.refreshFederated()
	}
	return c.set, c.changed
}

// refreshFederated asks the CA for the federated bundles once, within 10
// seconds, and wakes the streams when they changed.
func (a *Agent) refreshFederated() {
	next, err := a.fetchFederated()
	if err != nil {
		a.log.Warn("federated bundles: the CA did not answer; serving the last ones known", "error", err.Error())
	}
	c := &a.fed
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fetching, c.fetched = false, time.Now()
	if err == nil && !next.equal(c.set) {
		c.set = next
		close(c.changed)
		c.changed = make(chan struct{})
	}
}

func (a *Agent) fetchFederated() (federatedSet, error) {
	cl, err := a.nodeClient()
	if err != nil {
		return federatedSet{}, err
	}
	defer cl.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	own, _ := a.roots()
	fed, err := cl.FederatedBundles(ctx, own)
	if err != nil {
		return federatedSet{}, err
	}
	for _, name := range fed.Bad {
		a.log.Warn("federated bundles: the CA sent an unusable bundle; left out", "trust_domain", name)
	}
	return federatedSet{roots: fed.Roots, jwt: fed.JWT}, nil
}
