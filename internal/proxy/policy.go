package proxy

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/watch"
)

// StaticPolicy is a policy that never changes (from --allow flags).
type StaticPolicy struct{ P *authz.Policy }

// Policy implements PolicySource.
func (s StaticPolicy) Policy() *authz.Policy { return s.P }

// PolicyFile serves the rules of --allow flags plus a YAML policy file, and
// follows the file: a change is applied without a restart, and a broken
// file keeps the last good policy in force and says why.
type PolicyFile struct {
	path    string
	base    *authz.Policy
	current atomic.Pointer[authz.Policy]
	raw     []byte
	log     *slog.Logger
	metrics *Metrics
}

// LoadPolicyFile reads path (it must be valid at start) and merges the
// rules of base.
func LoadPolicyFile(path string, base *authz.Policy, log *slog.Logger, m *Metrics) (*PolicyFile, error) {
	f := &PolicyFile{path: path, base: base, log: log, metrics: m}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if _, err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Policy implements PolicySource.
func (f *PolicyFile) Policy() *authz.Policy { return f.current.Load() }

// Reload re-reads the file; it reports whether the policy changed. On error
// the policy in force stays.
func (f *PolicyFile) Reload() (bool, error) {
	data, err := os.ReadFile(f.path)
	if err != nil {
		return false, fmt.Errorf("--policy %s: %w", f.path, err)
	}
	if f.current.Load() != nil && bytes.Equal(data, f.raw) {
		return false, nil
	}
	p, err := authz.Parse(data)
	if err != nil {
		f.raw = data // report a broken file once, not every poll
		return false, fmt.Errorf("--policy %s: %w", f.path, err)
	}
	f.raw = data
	f.current.Store(authz.Merge(f.base, p))
	return true, nil
}

// Run polls the file every interval (zero: one second) until ctx is done.
func (f *PolicyFile) Run(ctx context.Context, interval time.Duration) error {
	return f.Loop(interval).Run(ctx)
}

// Loop is Run's poll loop: a reload that failed keeps the last good policy
// and says why, one that changed the policy says so. Callers may set its
// Now (reload on SIGHUP); tests set its Ticks.
func (f *PolicyFile) Loop(interval time.Duration) watch.Loop {
	return watch.Loop{
		Reload: func(context.Context) (bool, error) { return f.Reload() },
		OnChange: func() {
			f.metrics.PolicyReloaded(true)
			f.log.Info("policy reloaded", "file", f.path, "rules", len(f.Policy().Rules))
		},
		OnError: func(err error) {
			f.metrics.PolicyReloaded(false)
			f.log.Error("policy reload failed; keeping the last good policy", "file", f.path, "error", err.Error())
		},
		Interval: interval,
	}
}
