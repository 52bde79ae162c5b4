package agent

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/atomicfile"
	"github.com/mutual-tls/mutual/internal/client"
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
	next, keep, err := a.fetchFederated()
	if err != nil {
		a.log.Warn("federated bundles: the CA did not answer; serving the last ones known", "error", err.Error())
	}
	c := &a.fed
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fetching, c.fetched = false, time.Now()
	if err == nil && !next.equal(c.set) {
		// Kept for a restart while the CA is down (and so that --write
		// does not drop them from the directories it rewrites then).
		if err := atomicfile.WriteFile(filepath.Join(a.cfg.StateDir, federatedFile), keep, 0o600); err != nil {
			a.log.Warn("federated bundles: cannot keep them on disk; a restart while the CA is down starts without them", "error", err.Error())
		}
		a.log.Info("federated bundles updated", "trust_domains", strings.Join(names(next), ","))
		c.set = next
		close(c.changed)
		c.changed = make(chan struct{})
	}
}

// names are the trust domains of set, in name order.
func names(set federatedSet) []string {
	var out []string
	for _, td := range sortedTrustDomains(set.roots) {
		out = append(out, td.Name())
	}
	return out
}

// fetchFederated asks the CA for the federated bundles; keep is the
// answer to keep in the state directory when it changes what is held.
func (a *Agent) fetchFederated() (set federatedSet, keep []byte, err error) {
	cl, err := a.nodeClient()
	if err != nil {
		return federatedSet{}, nil, err
	}
	defer cl.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cl.Bundle(ctx)
	if err != nil {
		return federatedSet{}, nil, err
	}
	kept := api.BundleResponse{FederatedBundles: resp.FederatedBundles, FederatedJWTBundles: resp.FederatedJWTBundles}
	keep, err = json.Marshal(kept)
	return a.parseFederated(&kept, "the CA sent"), keep, err
}

// parseFederated reads the federated bundles of resp, logging those left
// out (from says whose they were).
func (a *Agent) parseFederated(resp *api.BundleResponse, from string) federatedSet {
	own, _ := a.roots()
	fed := client.ParseFederated(resp, own)
	for _, name := range fed.Bad {
		a.log.Warn("federated bundles: "+from+" an unusable bundle; left out", "trust_domain", name)
	}
	return federatedSet{roots: fed.Roots, jwt: fed.JWT}
}

// federatedFile keeps the federated bundles last fetched, so that a
// restart while the CA is down still serves them (and --write does not
// drop them from the directories it rewrites).
const federatedFile = "federated_bundles.json"

// loadFederated serves the federated bundles kept on disk until the CA
// answers; none kept (a first start) is not an error.
func (a *Agent) loadFederated() {
	path := filepath.Join(a.cfg.StateDir, federatedFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var kept api.BundleResponse
	if err == nil {
		err = json.Unmarshal(b, &kept)
	}
	if err != nil {
		a.log.Warn("federated bundles: the copy kept on disk cannot be read; waiting for the CA's", "path", path, "error", err.Error())
		return
	}
	a.fed.set = a.parseFederated(&kept, path+" holds")
}
