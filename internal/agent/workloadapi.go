package agent

import (
	"context"
	"crypto/x509"
	"maps"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	workload "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/selector"
)

// securityHeader must be present on every Workload API call (SPIFFE
// Workload API specification, section 4), so that a browser or another
// proxy cannot be tricked into calling the agent.
const securityHeader = "workload.spiffe.io"

func (a *Agent) grpcServer() *grpc.Server {
	s := grpc.NewServer(grpc.Creds(peerCreds{procRoot: a.att.procRoot}))
	w := &workloadAPI{a: a}
	workload.RegisterSpiffeWorkloadAPIServer(s, w)
	secretv3.RegisterSecretDiscoveryServiceServer(s, &sdsServer{w: w})
	registerHealth(s)
	return s
}

type workloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	a *Agent
}

// caller checks the security header and attests the calling process.
func (w *workloadAPI) caller(ctx context.Context) (selector.Workload, *peerConn, error) {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok || len(md.Get(securityHeader)) != 1 || md.Get(securityHeader)[0] != "true" {
		w.a.metrics.requests.WithLabelValues("missing_header").Inc()
		return selector.Workload{}, nil, status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return w.attestPeer(ctx)
}

// attestPeer attests the process that sent the request on ctx's connection.
func (w *workloadAPI) attestPeer(ctx context.Context) (selector.Workload, *peerConn, error) {
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
		fed, fedChanged := w.a.federated()
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
			resp.FederatedBundles = fed.der()
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
		case <-time.After(w.a.federatedPoll()):
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
	return w.streamBundles(stream.Context(), func(fed federatedSet) (map[string][]byte, error) {
		td, roots := w.a.roots()
		bundles := fed.der()
		bundles[td.IDString()] = chainDER(roots)
		return bundles, nil
	}, func(bundles map[string][]byte) error {
		return stream.Send(&workload.X509BundlesResponse{Bundles: bundles})
	})
}

// streamBundles is the loop of FetchX509Bundles and FetchJWTBundles: for a
// caller with at least one entry, it sends what build makes of the
// federated bundles (and the agent's own), at once and again whenever it
// changes (a rotation, a new federated bundle), until the stream ends. A
// nil map from build is not sent (nothing to send yet).
func (w *workloadAPI) streamBundles(ctx context.Context, build func(federatedSet) (map[string][]byte, error), send func(map[string][]byte) error) error {
	wl, _, err := w.caller(ctx)
	if err != nil {
		return err
	}
	var last map[string][]byte
	for {
		changed := w.a.changes()
		if len(w.a.matchEntries(wl)) == 0 {
			return w.denied(wl)
		}
		fed, fedChanged := w.a.federated()
		bundles, err := build(fed)
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		if bundles != nil && (last == nil || !maps.EqualFunc(bundles, last, sameBytes)) {
			if err := send(bundles); err != nil {
				return err
			}
			last = bundles
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-fedChanged:
		case <-time.After(w.a.federatedPoll()):
		}
	}
}
