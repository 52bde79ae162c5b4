package proxy

import (
	"encoding/json"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/mutual-tls/mutual/internal/api"
)

// MigrationReport records who still connects without a certificate in
// permissive mode, so a team knows when it can switch to strict.
type MigrationReport struct {
	mu      sync.Mutex
	sources map[string]*MigrationSource
	now     func() time.Time
	since   time.Time
}

// MigrationSource is one client address seen without a certificate; the
// type is the API's, which the dashboard reads.
type MigrationSource = api.MigrationSource

// NewMigrationReport makes an empty report.
func NewMigrationReport() *MigrationReport {
	return &MigrationReport{sources: map[string]*MigrationSource{}, now: time.Now, since: time.Now().UTC()}
}

// Record notes one connection (or request) from remote without a certificate.
func (r *MigrationReport) Record(remote net.Addr, kind string) {
	if r == nil {
		return
	}
	host := remote.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	key := host + " " + kind
	s, ok := r.sources[key]
	if !ok {
		if len(r.sources) >= 10000 {
			return // bounded: a scan of the address space must not exhaust memory
		}
		s = &MigrationSource{Source: host, Kind: kind, FirstSeen: now}
		r.sources[key] = s
	}
	s.Count++
	s.LastSeen = now
}

// Snapshot returns the sources, most recently seen first.
func (r *MigrationReport) Snapshot() []MigrationSource {
	r.mu.Lock()
	out := make([]MigrationSource, 0, len(r.sources))
	for _, s := range r.sources {
		out = append(out, *s)
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].LastSeen.After(out[j].LastSeen) })
	return out
}

// ServeHTTP answers GET /migration with the report as JSON.
func (r *MigrationReport) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	snap := r.Snapshot()
	var total int64
	for _, s := range snap {
		total += s.Count
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(api.MigrationReport{Since: r.since, WithoutCertificateTotal: total, Sources: snap})
}
