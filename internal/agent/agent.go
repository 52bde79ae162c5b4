// Package agent is mutual's node agent. It holds the node's identity,
// learns from the CA which workload identities its node may hand out
// (registration entries), obtains and rotates a certificate for each, and
// serves them to local processes over the SPIFFE Workload API, identifying
// each caller by its Unix credentials. Everything it holds lives under its
// state directory, so that a restart while the CA is down still serves.
package agent

import (
	"context"
	"crypto"
	crand "crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/atomicfile"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/selector"
)

// Layout of the state directory.
const (
	nodeDir     = "node"
	svidsDir    = "svids"
	entriesFile = "entries.json"
)

// Config configures an agent. Zero values are the documented defaults.
type Config struct {
	// StateDir keeps the node identity, the entries and every workload
	// certificate (required).
	StateDir string
	// Token enrolls the node on first start; ignored once enrolled.
	Token string
	// TokenFile, if set, is read again whenever the node certificate has
	// expired (a CA outage longer than its lifetime): a new join token for
	// the same node written there re-enrolls the node without a restart.
	TokenFile string
	// Socket is the Workload API's Unix socket path (required).
	Socket string
	// Writes keep identity directories current for programs that read files.
	Writes []WriteSpec
	// SyncInterval is how often entries are fetched; default 5s.
	SyncInterval time.Duration
	// Log receives structured events; nil discards.
	Log *slog.Logger
	// Registry receives the agent's metrics; nil makes a private one.
	Registry *prometheus.Registry
	// Metrics is the address the package-level Run serves the Registry's
	// /metrics on; empty means none. New and Agent.Run ignore it.
	Metrics string
}

// svid is one workload certificate the agent holds.
type svid struct {
	entry api.Entry
	sels  []selector.Selector
	id    *identity.Identity
	// renewAt is when to rotate; retryAt and failures drive backoff.
	renewAt  time.Time
	retryAt  time.Time
	failures int
	warned   bool
}

// Agent is a node agent. Build it with New, then call Run.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	att     *attestor
	ln      net.Listener

	mu       sync.RWMutex
	node     *identity.Identity
	caURLs   []string
	svids    map[string]*svid // by entry ID
	changed  chan struct{}    // closed and replaced at every change
	nodeNext time.Time
	nodeFail int
	// nodeWarned: the "renewal failing" warning was logged for this node
	// certificate; expiredSaid: the "expired" error was logged; badToken:
	// the last token from TokenFile the CA refused (not tried again).
	nodeWarned  bool
	expiredSaid bool
	badToken    string
	lastSync    time.Time
	synced      bool
	jwt         jwtState
	fed         federatedCache
	// revocations is the revocation watcher once Run has started it (for
	// Ready).
	revocations atomic.Pointer[revocation.Watcher]
	// caMoved is signalled when a re-enrollment brought other CA URLs:
	// the revocation watcher restarts on them.
	caMoved chan struct{}
}

// New loads the agent's state (enrolling the node with cfg.Token on first
// start) and binds the Workload API socket. It starts no goroutine.
func New(ctx context.Context, cfg Config) (*Agent, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("--dir: required: the agent's state directory")
	}
	if cfg.Socket == "" {
		return nil, errors.New("--socket: required: the Workload API socket path")
	}
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = 5 * time.Second
	}
	a := &Agent{cfg: cfg, log: cfg.Log, att: newAttestor(), svids: map[string]*svid{}, changed: make(chan struct{}), caMoved: make(chan struct{}, 1)}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	a.metrics = newMetrics(reg)
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("--dir %s: %w", cfg.StateDir, err)
	}
	dirs := map[string]bool{}
	for i := range cfg.Writes {
		d := filepath.Clean(cfg.Writes[i].Dir)
		if dirs[d] {
			return nil, fmt.Errorf("--write: two identity directories at %s: give each its own directory", d)
		}
		dirs[d] = true
		if err := cfg.Writes[i].resolve(); err != nil {
			return nil, err
		}
	}
	// Bind the socket first: a start that must fail should not spend the
	// join token.
	ln, err := listenSocket(cfg.Socket)
	if err != nil {
		return nil, err
	}
	a.ln = ln
	if err := a.loadOrEnroll(ctx); err != nil {
		a.Close()
		return nil, err
	}
	if err := a.loadState(); err != nil {
		a.Close()
		return nil, err
	}
	a.loadFederated()
	return a, nil
}

// listenSocket binds the Unix socket, removing a stale socket file but
// refusing one another process still serves.
func listenSocket(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("--socket %s: %w", path, err)
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("--socket %s: the path exists and is not a socket; choose another path", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("--socket %s: another process (an agent already running?) serves this socket", path)
		}
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("--socket %s: %w", path, err)
	}
	// Any local process may call; what it gets is decided by attestation.
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// Close releases the socket.
func (a *Agent) Close() error {
	if a.ln != nil {
		a.ln.Close()
		os.Remove(a.cfg.Socket)
	}
	return nil
}

// NodeID returns the node's SPIFFE ID.
func (a *Agent) NodeID() spiffeid.ID {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.node.ID
}

func (a *Agent) loadOrEnroll(ctx context.Context) error {
	dir := filepath.Join(a.cfg.StateDir, nodeDir)
	if _, err := os.Stat(filepath.Join(dir, identity.CertFile)); err == nil {
		id, err := identity.Load(dir)
		if err != nil {
			return fmt.Errorf("the agent's state is damaged (%v): move %s away and enroll again with --token", err, a.cfg.StateDir)
		}
		if !time.Now().Before(id.Leaf().NotAfter) {
			urls, _ := client.LoadCAURLs(dir)
			if a.cfg.TokenFile != "" && len(urls) > 0 {
				// Start, and re-enroll from the token file as soon as it
				// holds a token the CA takes (see reenrollIfExpired):
				// the socket answers meanwhile.
				a.node, a.caURLs = id, urls
				return nil
			}
			if a.cfg.Token == "" {
				return fmt.Errorf("the node certificate of %s expired at %s: enroll again with --token-file (a new join token for %s)", id.ID, id.Leaf().NotAfter.Format(time.RFC3339), id.ID)
			}
		} else {
			if a.cfg.Token != "" {
				a.log.Info("already enrolled; --token ignored", "node_id", id.ID.String())
			}
			urls, err := client.LoadCAURLs(dir)
			if err != nil || len(urls) == 0 {
				return fmt.Errorf("the agent's state is damaged (no CA address in %s): enroll again with --token", dir)
			}
			a.node, a.caURLs = id, urls
			return nil
		}
	}
	if a.cfg.Token == "" {
		return errors.New("--token: required on first start: a join token for this node's identity (spiffe://TD/node/NAME)")
	}
	enr, err := client.RequestIdentity(ctx, a.cfg.Token, pki.KeyECDSAP256, 0)
	if err != nil {
		return fmt.Errorf("enroll the node: %w", err)
	}
	if pki.KindOf(enr.Identity.ID) != pki.KindNode {
		return fmt.Errorf("the join token is for %s, not a node identity: create it with --identity spiffe://%s/node/NAME", enr.Identity.ID, enr.Identity.ID.TrustDomain().Name())
	}
	if err := enr.Identity.Save(dir); err != nil {
		return err
	}
	if err := client.SaveCAURLs(dir, enr.CAURLs); err != nil {
		return err
	}
	a.node, a.caURLs = enr.Identity, enr.CAURLs
	a.log.Info("node enrolled", "node_id", enr.Identity.ID.String(), "not_after", enr.Identity.Leaf().NotAfter)
	return nil
}

// loadState reads the cached entries and workload certificates, so that the
// agent serves before it reaches the CA.
func (a *Agent) loadState() error {
	b, err := os.ReadFile(filepath.Join(a.cfg.StateDir, entriesFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var list api.EntryList
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("the agent's state is damaged (%s: %v): delete that file and the agent will fetch the entries again", filepath.Join(a.cfg.StateDir, entriesFile), err)
	}
	for _, e := range list.Entries {
		sels, err := selector.ParseAll(e.Selectors)
		if err != nil {
			continue
		}
		s := &svid{entry: e, sels: sels}
		if id, err := identity.Load(a.svidDir(e.ID)); err == nil && id.ID.String() == e.SPIFFEID {
			s.id = id
			s.renewAt = renewTime(id.Leaf())
		}
		a.svids[e.ID] = s
	}
	a.log.Info("state loaded", "entries", len(a.svids))
	return nil
}

func (a *Agent) svidDir(entryID string) string {
	return filepath.Join(a.cfg.StateDir, svidsDir, entryID)
}

// renewTime is half the certificate's life, with ±5% jitter so that a fleet
// does not renew at once.
func renewTime(c *x509.Certificate) time.Time {
	start, life := pki.Lifetime(c)
	jitter := time.Duration((rand.Float64() - 0.5) * 0.1 * float64(life))
	return start.Add(life/2 + jitter)
}

// backoff is 2s, 4s, 8s... (failures counts the failed attempts so far),
// capped at a minute.
func backoff(failures int) time.Duration {
	d := time.Second << min(failures, 6)
	return min(d, time.Minute)
}

func (a *Agent) notify() {
	a.mu.Lock()
	close(a.changed)
	a.changed = make(chan struct{})
	a.mu.Unlock()
}

// Run serves the Workload API and keeps the node identity, the entries and
// every workload certificate current until ctx is done. It returns once
// everything it started (the Workload API server, the --write followers,
// the revocation watcher, the renewal loop) has stopped.
func (a *Agent) Run(ctx context.Context) error {
	srv := a.grpcServer()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		// Stopped before it served (ctx done at once) is not a failure.
		if err := srv.Serve(a.ln); err != nil && ctx.Err() == nil {
			return fmt.Errorf("workload API: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		stopGracefully(srv, 2*time.Second)
		return nil
	})
	for i := range a.cfg.Writes {
		w := &a.cfg.Writes[i]
		g.Go(func() error { a.runWriter(ctx, w); return nil })
	}
	g.Go(func() error { a.followRevocations(ctx); return nil })
	g.Go(func() error { a.followJWTBundle(ctx); return nil })
	g.Go(func() error { a.renewLoop(ctx); return nil })
	return g.Wait()
}

// stopGracefully lets the Workload API's streams end for up to grace, then
// closes them.
func stopGracefully(srv *grpc.Server, grace time.Duration) {
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(grace):
		srv.Stop()
		<-stopped
	}
}

// followRevocations follows the CA's revocation feed with the node's
// identity until ctx is done, on the CA URLs the node holds: a
// re-enrollment that brings other URLs restarts the watcher on them.
func (a *Agent) followRevocations(ctx context.Context) {
	for ctx.Err() == nil {
		a.mu.RLock()
		urls := a.caURLs
		a.mu.RUnlock()
		w := &revocation.Watcher{CAURLs: urls, Source: nodeSource{a}, OnRevoke: a.onRevoke, Log: a.log.With("component", "revocation")}
		a.revocations.Store(w)
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := w.Run(wctx); err != nil {
				a.log.Error("revocations are not followed", "node_id", a.NodeID().String(), "error", err.Error())
			}
		}()
		select {
		case <-ctx.Done():
		case <-a.caMoved:
			a.log.Info("the node re-enrolled with other CA URLs: the revocation feed follows them", "old_ca_urls", strings.Join(urls, " "))
		}
		cancel()
		<-done
	}
}

// renewLoop does whatever is due at start and every half second after,
// until ctx is done.
func (a *Agent) renewLoop(ctx context.Context) {
	a.tick(ctx)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.tick(ctx)
		}
	}
}

// tick does whatever is due: node renewal, entry sync, workload rotations.
func (a *Agent) tick(ctx context.Context) {
	now := time.Now()
	a.renewNodeIfDue(ctx, now)
	if now.Sub(a.lastSync) >= a.cfg.SyncInterval {
		a.lastSync = now
		if err := a.sync(ctx); err != nil {
			a.metrics.syncs.WithLabelValues("error").Inc()
			a.log.Warn("cannot reach the CA to sync entries; serving what is held", "error", err.Error())
		} else {
			a.metrics.syncs.WithLabelValues("ok").Inc()
		}
	}
	a.rotateDue(ctx, now)
}

func (a *Agent) nodeClient() (*client.Client, error) {
	a.mu.RLock()
	node, urls := a.node, a.caURLs
	a.mu.RUnlock()
	tc := node.TLSCertificate()
	cl, err := client.New(urls, node.Roots, &tc)
	if err != nil {
		return nil, err
	}
	cl.Retries = -1 // the agent backs off per item itself
	return cl, nil
}

func (a *Agent) renewNodeIfDue(ctx context.Context, now time.Time) {
	a.mu.RLock()
	leaf := a.node.Leaf()
	a.mu.RUnlock()
	_, life := pki.Lifetime(leaf)
	low := !now.Before(leaf.NotAfter.Add(-life / 4))
	a.metrics.nodeExpiry.Set(float64(leaf.NotAfter.Unix()))
	if low {
		a.metrics.nodeExpiring.Set(1)
	} else {
		a.metrics.nodeExpiring.Set(0)
	}
	if !now.Before(leaf.NotAfter) {
		a.reenrollIfExpired(ctx, now, leaf)
		return
	}
	if low && a.nodeFail > 0 && !a.nodeWarned {
		a.nodeWarned = true
		a.log.Warn("node certificate has less than a quarter of its life left and renewal is failing: when it expires the agent can no longer renew any identity; "+a.recovery(), "node_id", a.NodeID().String(), "not_after", leaf.NotAfter, "failures", a.nodeFail)
	}
	if a.nodeNext.IsZero() {
		a.nodeNext = renewTime(leaf)
	}
	if now.Before(a.nodeNext) {
		return
	}
	a.mu.RLock()
	cur, urls := a.node, a.caURLs
	a.mu.RUnlock()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	next, err := client.RenewIdentity(cctx, cur, urls, "", 0)
	if err == nil {
		err = next.Save(filepath.Join(a.cfg.StateDir, nodeDir))
	}
	if err != nil {
		a.nodeFail++
		a.nodeNext = now.Add(backoff(a.nodeFail))
		a.metrics.rotations.WithLabelValues("node", "error").Inc()
		a.log.Warn("node renewal failed; will retry", "node_id", cur.ID.String(), "retry_in", backoff(a.nodeFail).String(), "error", err.Error())
		return
	}
	a.nodeRenewed(next, "node renewed")
}

// nodeExpired reports whether the node certificate is past its NotAfter
// (nothing new can be obtained until the node is enrolled again).
func (a *Agent) nodeExpired() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return !time.Now().Before(a.node.Leaf().NotAfter)
}

// recovery says what the operator does about an expired node certificate.
func (a *Agent) recovery() string {
	if a.cfg.TokenFile != "" {
		return fmt.Sprintf("to recover, write a new join token for this node (mutual token create --identity %s) to %s", a.node.ID, a.cfg.TokenFile)
	}
	return fmt.Sprintf("to recover, restart the agent with --token-file holding a new join token for this node (mutual token create --identity %s)", a.node.ID)
}

// nodeRenewed installs a new node identity.
func (a *Agent) nodeRenewed(next *identity.Identity, msg string) {
	a.mu.Lock()
	a.node = next
	a.mu.Unlock()
	a.nodeFail, a.nodeWarned, a.expiredSaid = 0, false, false
	a.nodeNext = renewTime(next.Leaf())
	a.metrics.rotations.WithLabelValues("node", "ok").Inc()
	a.metrics.nodeExpiry.Set(float64(next.Leaf().NotAfter.Unix()))
	a.metrics.nodeExpiring.Set(0)
	a.log.Info(msg, "node_id", next.ID.String(), "not_after", next.Leaf().NotAfter)
}

// reenrollIfExpired handles a node certificate past its NotAfter: nothing can be
// renewed with it. With TokenFile, a new token found there re-enrolls the
// same node; otherwise the operator is told, once, what to do.
func (a *Agent) reenrollIfExpired(ctx context.Context, now time.Time, leaf *x509.Certificate) {
	a.mu.RLock()
	nodeID := a.node.ID
	a.mu.RUnlock()
	if !a.expiredSaid {
		a.expiredSaid = true
		a.log.Error("node certificate expired: the agent can no longer renew or obtain workload identities; "+a.recovery(), "node_id", nodeID.String(), "not_after", leaf.NotAfter)
	}
	if a.cfg.TokenFile == "" || now.Before(a.nodeNext) {
		return
	}
	b, err := os.ReadFile(a.cfg.TokenFile)
	tok := strings.TrimSpace(string(b))
	if err != nil || tok == "" || tok == a.badToken {
		a.nodeNext = now.Add(time.Second)
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	enr, err := client.RequestIdentity(cctx, tok, pki.KeyECDSAP256, 0) // as at first enrollment
	if err == nil && enr.Identity.ID != nodeID {
		err = fmt.Errorf("the token in %s is for %s, not this node (%s): create one with --identity %s", a.cfg.TokenFile, enr.Identity.ID, nodeID, nodeID)
	}
	if err == nil {
		dir := filepath.Join(a.cfg.StateDir, nodeDir)
		if err = enr.Identity.Save(dir); err == nil {
			err = client.SaveCAURLs(dir, enr.CAURLs)
		}
	}
	if err != nil {
		var ae *client.APIError
		if errors.As(err, &ae) && !ae.Unavailable() || enr != nil {
			a.badToken = tok // refused for good: wait for another token
		}
		a.nodeFail++
		a.nodeNext = now.Add(backoff(a.nodeFail))
		a.metrics.rotations.WithLabelValues("node", "error").Inc()
		a.log.Error("cannot re-enroll the node with the token in "+a.cfg.TokenFile, "node_id", nodeID.String(), "retry_in", backoff(a.nodeFail).String(), "error", err.Error())
		return
	}
	a.badToken = tok // single use: never presented again
	a.mu.Lock()
	if !slices.Equal(a.caURLs, enr.CAURLs) {
		select {
		case a.caMoved <- struct{}{}:
		default: // a restart is pending already
		}
	}
	a.caURLs = enr.CAURLs
	for _, s := range a.svids {
		s.retryAt, s.failures = time.Time{}, 0
	}
	a.mu.Unlock()
	a.nodeRenewed(enr.Identity, "node re-enrolled with a new join token after its certificate expired")
}

// sync fetches the node's entries, records them, and drops certificates of
// entries that are gone.
func (a *Agent) sync(ctx context.Context) error {
	cl, err := a.nodeClient()
	if err != nil {
		return err
	}
	defer cl.CloseIdleConnections()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	list, err := cl.NodeEntries(cctx)
	if err != nil {
		return err
	}
	b, _ := json.MarshalIndent(list, "", "  ")
	if err := atomicfile.WriteFile(filepath.Join(a.cfg.StateDir, entriesFile), b, 0o600); err != nil {
		return err
	}
	seen := map[string]bool{}
	changed := false
	a.mu.Lock()
	for _, e := range list.Entries {
		seen[e.ID] = true
		sels, err := selector.ParseAll(e.Selectors)
		if err != nil {
			a.log.Warn("entry with bad selectors ignored", "entry_id", e.ID, "error", err.Error())
			continue
		}
		s, ok := a.svids[e.ID]
		if !ok {
			a.svids[e.ID] = &svid{entry: e, sels: sels}
			changed = true
			continue
		}
		if !sameEntry(s.entry, e) {
			// The grant changed (names, roles, lifetime): rotate now.
			s.entry, s.sels, s.renewAt = e, sels, time.Time{}
			changed = true
		}
	}
	for id := range a.svids {
		if !seen[id] {
			delete(a.svids, id)
			os.RemoveAll(a.svidDir(id))
			changed = true
		}
	}
	a.synced = true
	a.mu.Unlock()
	a.metrics.svids.Set(float64(len(seen)))
	if changed {
		a.notify()
	}
	return nil
}

func sameEntry(x, y api.Entry) bool {
	j1, _ := json.Marshal(x)
	j2, _ := json.Marshal(y)
	return string(j1) == string(j2)
}

// rotateDue obtains certificates for entries that have none and rotates
// those past their renewal time, backing off on failure.
func (a *Agent) rotateDue(ctx context.Context, now time.Time) {
	a.mu.Lock()
	var due []*svid
	for _, s := range a.svids {
		if (s.id == nil || !now.Before(s.renewAt)) && !now.Before(s.retryAt) {
			due = append(due, s)
		}
		if s.id != nil {
			a.metrics.expiry.WithLabelValues(s.entry.SPIFFEID).Set(float64(s.id.Leaf().NotAfter.Unix()))
			leaf := s.id.Leaf()
			_, life := pki.Lifetime(leaf)
			low := now.After(leaf.NotAfter.Add(-life / 4))
			if low && !s.warned {
				s.warned = true
				a.log.Warn("workload certificate has less than a quarter of its life left", "spiffe_id", s.entry.SPIFFEID, "not_after", leaf.NotAfter)
			}
			v := 0.0
			if low {
				v = 1
			}
			a.metrics.expiring.WithLabelValues(s.entry.SPIFFEID).Set(v)
		}
	}
	a.mu.Unlock()
	sort.Slice(due, func(i, j int) bool { return due[i].entry.ID < due[j].entry.ID })
	if len(due) == 0 {
		return
	}
	cl, err := a.nodeClient()
	if err != nil {
		return
	}
	defer cl.CloseIdleConnections()
	for _, s := range due {
		if err := a.obtain(ctx, cl, s); err != nil {
			a.mu.Lock()
			s.failures++
			s.retryAt = now.Add(backoff(s.failures))
			a.mu.Unlock()
			a.metrics.rotations.WithLabelValues("workload", "error").Inc()
			a.log.Warn("cannot obtain workload certificate; will retry", "spiffe_id", s.entry.SPIFFEID, "entry_id", s.entry.ID, "retry_in", backoff(s.failures).String(), "error", err.Error())
			continue
		}
		a.metrics.rotations.WithLabelValues("workload", "ok").Inc()
	}
	a.notify()
}

func (a *Agent) obtain(ctx context.Context, cl *client.Client, s *svid) error {
	key, err := pki.GenerateKey(pki.KeyECDSAP256, nil)
	if err != nil {
		return err
	}
	csr, err := x509.CreateCertificateRequest(crand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	resp, err := cl.NodeSVID(cctx, api.NodeSVIDRequest{EntryID: s.entry.ID, CSR: string(pki.EncodeCSR(csr))})
	if err != nil {
		return err
	}
	idn, err := a.checkSVID(resp, key, s.entry)
	if err != nil {
		return err
	}
	chain := idn.Chain
	if err := idn.Save(a.svidDir(s.entry.ID)); err != nil {
		return err
	}
	a.mu.Lock()
	s.id, s.renewAt, s.failures, s.retryAt, s.warned = idn, renewTime(chain[0]), 0, time.Time{}, false
	a.mu.Unlock()
	a.log.Info("workload certificate obtained", "spiffe_id", resp.SPIFFEID, "entry_id", s.entry.ID, "serial", resp.Serial, "not_after", resp.NotAfter)
	return nil
}

// checkSVID verifies what the CA answered before the agent keeps or serves
// it: the chain verifies to the node's trust bundle, the leaf holds key and
// carries exactly the SPIFFE ID the entry grants. The bundle served with it
// is the node's, never one taken from the answer.
func (a *Agent) checkSVID(resp *api.IssueResponse, key crypto.Signer, e api.Entry) (*identity.Identity, error) {
	chain, err := pki.ParseCertificates([]byte(resp.ChainPEM))
	if err != nil {
		return nil, fmt.Errorf("the CA's answer for entry %s: chain: %w", e.ID, err)
	}
	leaf := chain[0]
	if !pki.PublicKeysEqual(leaf.PublicKey, key.Public()) {
		return nil, fmt.Errorf("the CA's answer for entry %s: a certificate for another key", e.ID)
	}
	a.mu.RLock()
	roots := a.node.Roots
	a.mu.RUnlock()
	if _, err := pki.VerifyChain(chain, roots, time.Time{}, x509.ExtKeyUsageAny); err != nil {
		return nil, fmt.Errorf("the certificate the CA returned for entry %s does not verify against the node's trust bundle: %w", e.ID, err)
	}
	if leaf.IsCA {
		return nil, fmt.Errorf("the CA returned a CA certificate for entry %s", e.ID)
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("the certificate the CA returned for entry %s: %w", e.ID, err)
	}
	if id.String() != e.SPIFFEID || resp.SPIFFEID != e.SPIFFEID {
		return nil, fmt.Errorf("the CA returned a certificate for %s (answer says %q), but entry %s grants %s", id, resp.SPIFFEID, e.ID, e.SPIFFEID)
	}
	return &identity.Identity{ID: id, Chain: chain, Key: key, Roots: roots}, nil
}

// match returns the identities the workload is entitled to, in entry order,
// the number of entries it matches, and how many of those hold a
// certificate that has expired (renewal failed for its whole life).
func (a *Agent) match(w selector.Workload) (ids []*identity.Identity, entries, expired int) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	keys := make([]string, 0, len(a.svids))
	for k := range a.svids {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	now := time.Now()
	for _, k := range keys {
		s := a.svids[k]
		if selector.MatchAll(s.sels, w) {
			entries++
			switch {
			case s.id == nil:
			case now.Before(s.id.Leaf().NotAfter):
				ids = append(ids, s.id)
			default:
				expired++
			}
		}
	}
	return ids, entries, expired
}

func (a *Agent) changes() <-chan struct{} {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.changed
}

// roots returns the trust bundle of the node's trust domain.
func (a *Agent) roots() (spiffeid.TrustDomain, []*x509.Certificate) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.node.ID.TrustDomain(), a.node.Roots
}
