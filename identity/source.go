package identity

import (
	"context"
	"crypto/x509"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/internal/watch"
)

// DirSource serves the identity in a directory and follows it as it is
// rewritten (by `mutual cert renew`, the agent, or any tool that replaces the
// files atomically). It implements go-spiffe's x509svid.Source and
// x509bundle.Source, so it plugs into package tlsconfig (or go-spiffe's)
// wherever a Workload API source would.
//
// A rewrite is picked up by Reload, which Run calls on a timer. A half-done
// rewrite (a new certificate beside the old key) is not an error the source
// acts on: it keeps serving the last consistent identity and tries again.
type DirSource struct {
	dir string

	mu      sync.RWMutex
	current *Identity
	bundles *x509bundle.Set
	stamp   string
	changed chan struct{}
}

// NewDirSource loads the identity in dir. It starts nothing; call Run to
// follow changes.
func NewDirSource(dir string) (*DirSource, error) {
	s := &DirSource{dir: dir, changed: make(chan struct{})}
	if _, err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Dir returns the directory followed.
func (s *DirSource) Dir() string { return s.dir }

// stamp summarises the files' sizes and modification times, and the set
// ..data names (WriteDir makes a new set at every write, federated bundles
// included).
func (s *DirSource) fileStamp() string {
	out, _ := os.Readlink(filepath.Join(s.dir, setLink))
	out += ";"
	for _, f := range []string{CertFile, KeyFile, BundleFile} {
		st, err := os.Stat(filepath.Join(s.dir, f))
		if err != nil {
			out += f + ":missing;"
			continue
		}
		out += fmt.Sprintf("%s:%d:%d;", f, st.Size(), st.ModTime().UnixNano())
	}
	return out
}

// Reload re-reads the directory if its files changed, and reports whether a
// new identity or bundle is now served.
func (s *DirSource) Reload() (bool, error) {
	stamp := s.fileStamp()
	s.mu.RLock()
	same := stamp == s.stamp
	s.mu.RUnlock()
	if same {
		return false, nil
	}
	id, err := Load(s.dir)
	if err != nil {
		return false, err
	}
	b := id.Bundles()
	s.mu.Lock()
	old := s.current
	s.current, s.bundles, s.stamp = id, b, stamp
	ch := s.changed
	s.changed = make(chan struct{})
	s.mu.Unlock()
	close(ch)
	return old == nil || !sameIdentity(old, id), nil
}

func sameIdentity(a, b *Identity) bool {
	return sameCerts(a.Chain, b.Chain) && sameCerts(a.Roots, b.Roots) &&
		maps.EqualFunc(a.Federated, b.Federated, sameCerts)
}

func sameCerts(a, b []*x509.Certificate) bool {
	return slices.EqualFunc(a, b, (*x509.Certificate).Equal)
}

// Run polls the directory every interval (zero means one second) until ctx
// is done. onError, if not nil, hears of reloads that failed; the last good
// identity keeps being served.
func (s *DirSource) Run(ctx context.Context, interval time.Duration, onError func(error)) error {
	return s.loop(interval, onError).Run(ctx)
}

// loop is Run's poll loop; tests set its Ticks.
func (s *DirSource) loop(interval time.Duration, onError func(error)) watch.Loop {
	return watch.Loop{
		Reload:   func(context.Context) (bool, error) { return s.Reload() },
		OnError:  onError,
		Interval: interval,
	}
}

// Changed returns a channel closed at the next change of identity or bundle.
func (s *DirSource) Changed() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

// Identity returns the identity served now.
func (s *DirSource) Identity() *Identity {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.current
}

// GetX509SVID implements x509svid.Source.
func (s *DirSource) GetX509SVID() (*x509svid.SVID, error) {
	id := s.Identity()
	return &x509svid.SVID{ID: id.ID, Certificates: id.Chain, PrivateKey: id.Key}, nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source: the roots of
// the identity's own trust domain (bundle.pem) or of a federated one
// (federated/TD.pem), each for its own trust domain only (Identity.Bundles).
// A trust domain the directory holds no bundle for is an error naming the
// ones it does.
func (s *DirSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if b, ok := s.bundles.Get(td); ok {
		return b, nil
	}
	var held []string
	for _, b := range s.bundles.Bundles() {
		held = append(held, b.TrustDomain().Name())
	}
	return nil, fmt.Errorf("no trust bundle for trust domain %q in %s (it holds %s; a federated one comes as %s/%s%s)",
		td.Name(), s.dir, strings.Join(held, ", "), FederatedDir, td.Name(), federatedExt)
}
