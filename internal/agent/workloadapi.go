package agent

import (
	"context"
	"crypto/x509"
	"maps"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	workload "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/selector"
)

// securityHeader must be present on every Workload API call (SPIFFE
// Workload API specification, section 4), so that a browser or another
// proxy cannot be tricked into calling the agent.
const securityHeader = "workload.spiffe.io"

func (a *Agent) grpcServer() *grpc.Server {
	s := grpc.NewServer(grpc.Creds(peerCreds{procRoot: a.att.procRoot}))
	workload.RegisterSpiffeWorkloadAPIServer(s, &workloadAPI{a: a})
	return s
}

type workloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	a   *Agent
	fed federatedCache
}

// federatedPoll is how often the agent asks the CA for the federated
// bundles while Workload API streams are open (at most every
// federatedPoll/2, however many streams there are).
var federatedPoll = time.Minute

// federatedCache holds the federated trust domains' bundles as the CA last
// gave them: the last good answer stays while the CA is unreachable, and
// no Workload API answer waits for the CA.
type federatedCache struct {
	mu       sync.Mutex
	fetched  time.Time
	fetching bool
	bundles  map[string][]byte // trust domain ID ("spiffe://td") → DER roots
	changed  chan struct{}     // closed and replaced when bundles change
}

// federated returns the federated bundles known now, and a channel closed
// when they change; it starts a fetch from the CA when they are due.
func (w *workloadAPI) federated() (map[string][]byte, <-chan struct{}) {
	c := &w.fed
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.changed == nil {
		c.changed = make(chan struct{})
	}
	if !c.fetching && (c.fetched.IsZero() || time.Since(c.fetched) >= federatedPoll/2) {
		c.fetching = true
		go w.refreshFederated()
	}
	return c.bundles, c.changed
}

// refreshFederated asks the CA for the federated bundles once, within 10
// seconds, and wakes the streams when they changed.
func (w *workloadAPI) refreshFederated() {
	next, err := w.fetchFederated()
	if err != nil {
		w.a.log.Warn("federated bundles: the CA did not answer; serving the last ones known", "error", err.Error())
	}
	c := &w.fed
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fetching, c.fetched = false, time.Now()
	if err == nil && !maps.EqualFunc(next, c.bundles, sameBytes) {
		c.bundles = next
		close(c.changed)
		c.changed = make(chan struct{})
	}
}

func (w *workloadAPI) fetchFederated() (map[string][]byte, error) {
	cl, err := w.a.nodeClient()
	if err != nil {
		return nil, err
	}
	defer cl.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cl.Bundle(ctx)
	if err != nil {
		return nil, err
	}
	own, _ := w.a.roots()
	next := map[string][]byte{}
	for name, rootsPEM := range resp.FederatedBundles {
		td, err := spiffeid.TrustDomainFromString(name)
		roots, perr := pki.ParseCertificates([]byte(rootsPEM))
		if err != nil || perr != nil || td == own || len(roots) == 0 {
			w.a.log.Warn("federated bundles: the CA sent an unusable bundle; left out", "trust_domain", name)
			continue
		}
		next[td.IDString()] = chainDER(roots)
	}
	return next, nil
}

// caller checks the security header and attests the calling process.
func (w *workloadAPI) caller(ctx context.Context) (selector.Workload, *peerConn, error) {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok || len(md.Get(securityHeader)) != 1 || md.Get(securityHeader)[0] != "true" {
		w.a.metrics.requests.WithLabelValues("missing_header").Inc()
		return selector.Workload{}, nil, status.Error(codes.InvalidArgument, "security header missing from request")
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return selector.Workload{}, nil, status.Error(codes.Internal, "no peer information")
	}
	info, ok := p.AuthInfo.(callerInfo)
	if !ok || info.err != nil || info.conn == nil {
		w.a.log.Error("cannot read the caller's credentials", "error", errString(info.err))
		return selector.Workload{}, nil, status.Error(codes.Internal, "cannot identify the caller")
	}
	wl, note, err := w.a.att.attest(ctx, info.conn)
	if err != nil {
		w.a.metrics.requests.WithLabelValues("unbound").Inc()
		w.a.log.Warn("workload API request refused: it cannot be tied to the calling process", "pid", info.conn.cred.Pid, "uid", info.conn.cred.Uid, "error", err.Error())
		return selector.Workload{}, nil, status.Error(codes.PermissionDenied, "no identity issued: "+err.Error())
	}
	if note != "" {
		w.a.log.Info("workload API caller attested without path and sha256", "pid", wl.PID, "uid", wl.UID, "reason", note)
	}
	return wl, info.conn, nil
}

func errString(err error) string {
	if err == nil {
		return "no credentials"
	}
	return err.Error()
}

func (w *workloadAPI) denied(wl selector.Workload) error {
	w.a.metrics.requests.WithLabelValues("denied").Inc()
	w.a.log.Warn("workload API caller matches no entry", "pid", wl.PID, "uid", wl.UID, "gid", wl.GID, "user", wl.User, "path", wl.Path, "sha256", wl.SHA256)
	return status.Error(codes.PermissionDenied, "no identity issued")
}

func chainDER(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}

func (w *workloadAPI) svidResponse(ids []*identity.Identity) (*workload.X509SVIDResponse, error) {
	resp := &workload.X509SVIDResponse{}
	for _, id := range ids {
		key, err := x509.MarshalPKCS8PrivateKey(id.Key)
		if err != nil {
			return nil, err
		}
		resp.Svids = append(resp.Svids, &workload.X509SVID{
			SpiffeId:    id.ID.String(),
			X509Svid:    chainDER(id.Chain),
			X509SvidKey: key,
			Bundle:      chainDER(id.Roots),
		})
	}
	return resp, nil
}

// FetchX509SVID streams the caller's identities and every rotation.
func (w *workloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	ctx := stream.Context()
	wl, conn, err := w.caller(ctx)
	if err != nil {
		return err
	}
	var last *workload.X509SVIDResponse
	for {
		if pid := conn.foreignPID(); pid != 0 {
			// Another process wrote on the connection since: it is no
			// longer the caller's alone.
			return status.Errorf(codes.PermissionDenied, "no identity issued: %v: PID %d also wrote on the connection", errNotBound, pid)
		}
		changed := w.a.changes()
		fed, fedChanged := w.federated()
		ids, entries, expired := w.a.match(wl)
		if entries == 0 {
			return w.denied(wl)
		}
		if len(ids) == 0 && (expired > 0 || w.a.nodeExpired()) {
			// What the caller holds (or would get) has expired and the agent
			// could not renew it: say so, rather than keep it waiting or
			// let it use an expired certificate.
			w.a.metrics.requests.WithLabelValues("expired").Inc()
			w.a.log.Warn("workload API: the caller's identity expired and could not be renewed", "pid", wl.PID, "uid", wl.UID, "path", wl.Path)
			return status.Error(codes.Unavailable, "the identity for this workload expired and the agent could not renew it (the CA is unreachable or the node certificate expired); the agent's log says why")
		}
		if len(ids) > 0 {
			resp, err := w.svidResponse(ids)
			if err != nil {
				return status.Error(codes.Internal, err.Error())
			}
			resp.FederatedBundles = fed
			if last == nil || !sameSVIDs(last, resp) {
				if err := stream.Send(resp); err != nil {
					return err
				}
				if last == nil {
					w.a.metrics.requests.WithLabelValues("ok").Inc()
					w.a.log.Info("workload API: identity served", "pid", wl.PID, "uid", wl.UID, "path", wl.Path, "spiffe_id", ids[0].ID.String())
				}
				last = resp
			}
		}
		// With matching entries but no certificate yet (just registered),
		// wait: the certificate comes at the next rotation pass. Wake up
		// too when a certificate sent expires.
		var expiry <-chan time.Time
		var timer *time.Timer
		if len(ids) > 0 {
			first := ids[0].Leaf().NotAfter
			for _, id := range ids[1:] {
				if na := id.Leaf().NotAfter; na.Before(first) {
					first = na
				}
			}
			timer = time.NewTimer(time.Until(first) + time.Millisecond)
			expiry = timer.C
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return nil
		case <-changed:
		case <-expiry:
		case <-fedChanged:
		case <-time.After(federatedPoll):
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

func sameSVIDs(x, y *workload.X509SVIDResponse) bool {
	if len(x.Svids) != len(y.Svids) || !maps.EqualFunc(x.FederatedBundles, y.FederatedBundles, sameBytes) {
		return false
	}
	for i := range x.Svids {
		if string(x.Svids[i].X509Svid) != string(y.Svids[i].X509Svid) || string(x.Svids[i].Bundle) != string(y.Svids[i].Bundle) {
			return false
		}
	}
	return true
}

func sameBytes(x, y []byte) bool { return string(x) == string(y) }

// FetchX509Bundles streams the trust bundle, and those of the federated
// trust domains, to any caller with at least one entry.
func (w *workloadAPI) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	ctx := stream.Context()
	wl, _, err := w.caller(ctx)
	if err != nil {
		return err
	}
	var last map[string][]byte
	for {
		changed := w.a.changes()
		if _, entries, _ := w.a.match(wl); entries == 0 {
			return w.denied(wl)
		}
		td, roots := w.a.roots()
		fed, fedChanged := w.federated()
		bundles := maps.Clone(fed)
		if bundles == nil {
			bundles = map[string][]byte{}
		}
		bundles[td.IDString()] = chainDER(roots)
		if last == nil || !maps.EqualFunc(bundles, last, sameBytes) {
			if err := stream.Send(&workload.X509BundlesResponse{Bundles: bundles}); err != nil {
				return err
			}
			last = bundles
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-fedChanged:
		case <-time.After(federatedPoll):
		}
	}
}
