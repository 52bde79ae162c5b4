package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	workload "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/atomicfile"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/selector"
)

// jwtBundleFile keeps the last JWT bundle fetched, so that a restart while
// the CA is down still validates.
const jwtBundleFile = "jwt_bundle.json"

// jwtState is what the agent holds for JWT-SVIDs: the trust domain's JWT
// bundle and the tokens obtained, per entry and audience, until half-life.
// Its zero value is ready.
type jwtState struct {
	mu     sync.Mutex
	bundle *jwtbundle.Bundle
	tokens map[string]cachedJWT
}

type cachedJWT struct {
	spiffeID  string
	token     string
	refreshAt time.Time
	expiry    time.Time
}

// jwtKey is the cache key of entryID's token for audience (order and
// repetition of audiences do not matter).
func jwtKey(entryID string, audience []string) string {
	aud := slices.Clone(audience)
	sort.Strings(aud)
	return entryID + "\x00" + strings.Join(slices.Compact(aud), "\x00")
}

// forgetJWT drops the cached tokens of spiffeID (revoked): the next
// request asks the CA, which refuses.
func (a *Agent) forgetJWT(spiffeID string) {
	a.jwt.mu.Lock()
	defer a.jwt.mu.Unlock()
	for k, c := range a.jwt.tokens {
		if c.spiffeID == spiffeID {
			delete(a.jwt.tokens, k)
		}
	}
}

// jwtBundle returns the JWT bundle held, or nil.
func (a *Agent) jwtBundle() *jwtbundle.Bundle {
	a.jwt.mu.Lock()
	defer a.jwt.mu.Unlock()
	return a.jwt.bundle
}

// followJWTBundle loads the JWT bundle kept on disk, then fetches it from
// the CA at start and every SyncInterval until ctx is done, telling the
// Workload API's streams when it changes.
func (a *Agent) followJWTBundle(ctx context.Context) {
	td, _ := a.roots()
	path := filepath.Join(a.cfg.StateDir, jwtBundleFile)
	if b, err := os.ReadFile(path); err == nil {
		if jb, err := jwtbundle.Parse(td, b); err == nil {
			a.setJWTBundle(jb)
		} else {
			a.log.Warn("the JWT bundle kept on disk is damaged; waiting for the CA's", "path", path, "error", err.Error())
		}
	}
	t := time.NewTicker(a.cfg.SyncInterval)
	defer t.Stop()
	for {
		if err := a.fetchJWTBundle(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("cannot fetch the JWT bundle from the CA; serving what is held", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *Agent) fetchJWTBundle(ctx context.Context) error {
	td, _ := a.roots()
	cl, err := a.nodeClient()
	if err != nil {
		return err
	}
	defer cl.CloseIdleConnections()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	sb, err := cl.SPIFFEBundle(cctx, td)
	if err != nil {
		return err
	}
	jb := sb.JWTBundle()
	if old := a.jwtBundle(); old != nil && old.Equal(jb) {
		return nil
	}
	b, err := jb.Marshal()
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(a.cfg.StateDir, jwtBundleFile), b, 0o600); err != nil {
		return err
	}
	a.setJWTBundle(jb)
	a.log.Info("JWT bundle updated", "trust_domain", td.Name(), "keys", len(jb.JWTAuthorities()))
	return nil
}

func (a *Agent) setJWTBundle(jb *jwtbundle.Bundle) {
	a.jwt.mu.Lock()
	a.jwt.bundle = jb
	a.jwt.mu.Unlock()
	a.notify()
}

// matchEntries returns the entries (in ID order) whose selectors the
// workload matches.
func (a *Agent) matchEntries(w selector.Workload) []api.Entry {
	a.mu.RLock()
	defer a.mu.RUnlock()
	var out []api.Entry
	for _, s := range a.svids {
		if selector.MatchAll(s.sels, w) {
			out = append(out, s.entry)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// FetchJWTSVID answers with a JWT-SVID for audience of each identity the
// caller is entitled to (or the one it names), from the cache while a
// token is younger than half its life, else from the CA.
func (w *workloadAPI) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	wl, _, err := w.caller(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.Audience) == 0 || slices.Contains(req.Audience, "") {
		return nil, status.Error(codes.InvalidArgument, "audience is required: name the service that will validate the JWT-SVID")
	}
	entries := w.a.matchEntries(wl)
	if len(entries) == 0 {
		return nil, w.denied(wl)
	}
	if req.SpiffeId != "" {
		entries = slices.DeleteFunc(entries, func(e api.Entry) bool { return e.SPIFFEID != req.SpiffeId })
		if len(entries) == 0 {
			w.a.metrics.requests.WithLabelValues("denied").Inc()
			return nil, status.Errorf(codes.PermissionDenied, "no identity issued: the caller is not entitled to %s", req.SpiffeId)
		}
	}
	resp := &workload.JWTSVIDResponse{}
	seen := map[string]bool{}
	for _, e := range entries {
		if seen[e.SPIFFEID] {
			continue
		}
		seen[e.SPIFFEID] = true
		tok, err := w.a.jwtFor(ctx, e, req.Audience)
		if err != nil {
			w.a.log.Warn("workload API: no JWT-SVID", "pid", wl.PID, "uid", wl.UID, "spiffe_id", e.SPIFFEID, "audience", req.Audience, "error", err.Error())
			return nil, jwtStatus(e.SPIFFEID, err)
		}
		resp.Svids = append(resp.Svids, &workload.JWTSVID{SpiffeId: e.SPIFFEID, Svid: tok})
	}
	w.a.metrics.requests.WithLabelValues("ok").Inc()
	return resp, nil
}

// jwtStatus maps the CA's refusal to a gRPC status.
func jwtStatus(id string, err error) error {
	var ae *client.APIError
	switch {
	case errors.As(err, &ae) && ae.Status == 403:
		return status.Errorf(codes.PermissionDenied, "no JWT-SVID issued for %s: %s", id, ae.Message)
	case errors.As(err, &ae) && ae.Status == 400:
		return status.Errorf(codes.InvalidArgument, "no JWT-SVID issued for %s: %s", id, ae.Message)
	}
	return status.Errorf(codes.Unavailable, "no JWT-SVID issued for %s: the CA cannot be reached (%v); retry", id, err)
}

// jwtFor returns a token of entry e for audience, cached until half-life.
func (a *Agent) jwtFor(ctx context.Context, e api.Entry, audience []string) (string, error) {
	k := jwtKey(e.ID, audience)
	now := time.Now()
	a.jwt.mu.Lock()
	c, ok := a.jwt.tokens[k]
	a.jwt.mu.Unlock()
	if ok && now.Before(c.refreshAt) && c.spiffeID == e.SPIFFEID {
		return c.token, nil
	}
	cl, err := a.nodeClient()
	if err != nil {
		return "", err
	}
	defer cl.CloseIdleConnections()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	resp, err := cl.NodeJWTSVID(cctx, api.NodeJWTSVIDRequest{EntryID: e.ID, Audience: audience})
	if err != nil {
		return "", err
	}
	if resp.SPIFFEID != e.SPIFFEID {
		return "", fmt.Errorf("the CA returned a JWT-SVID for %s, but entry %s grants %s", resp.SPIFFEID, e.ID, e.SPIFFEID)
	}
	c = cachedJWT{spiffeID: e.SPIFFEID, token: resp.Token, expiry: resp.ExpiresAt,
		refreshAt: resp.IssuedAt.Add(resp.ExpiresAt.Sub(resp.IssuedAt) / 2)}
	a.jwt.mu.Lock()
	if a.jwt.tokens == nil {
		a.jwt.tokens = map[string]cachedJWT{}
	}
	for key, old := range a.jwt.tokens {
		if !now.Before(old.expiry) {
			delete(a.jwt.tokens, key)
		}
	}
	a.jwt.tokens[k] = c
	a.jwt.mu.Unlock()
	return c.token, nil
}

// FetchJWTBundles streams the JWT bundle of the agent's trust domain and
// those of the federated trust domains the CA holds JWT authorities for, to
// any caller with at least one entry, and every change of them.
func (w *workloadAPI) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	return w.streamBundles(stream.Context(), func(fed federatedSet) (map[string][]byte, error) {
		set := w.a.jwtBundles(fed)
		if set == nil {
			return nil, nil
		}
		out := map[string][]byte{}
		for _, jb := range set.Bundles() {
			b, err := jb.Marshal()
			if err != nil {
				return nil, err
			}
			out[jb.TrustDomain().IDString()] = b
		}
		return out, nil
	}, func(bundles map[string][]byte) error {
		return stream.Send(&workload.JWTBundlesResponse{Bundles: bundles})
	})
}

// jwtBundles is the agent's JWT bundle and the federated ones of fed, each
// for its own trust domain; nil until the agent holds its own.
func (a *Agent) jwtBundles(fed federatedSet) *jwtbundle.Set {
	own := a.jwtBundle()
	if own == nil {
		return nil
	}
	set := jwtbundle.NewSet(own)
	for td, jb := range fed.jwt {
		if td != own.TrustDomain() {
			set.Add(jb)
		}
	}
	return set
}

// ValidateJWTSVID checks a JWT-SVID against the JWT bundle and the
// audience, for any caller with at least one entry.
func (w *workloadAPI) ValidateJWTSVID(ctx context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	wl, _, err := w.caller(ctx)
	if err != nil {
		return nil, err
	}
	if req.Audience == "" || req.Svid == "" {
		return nil, status.Error(codes.InvalidArgument, "both audience and svid are required")
	}
	if len(w.a.matchEntries(wl)) == 0 {
		return nil, w.denied(wl)
	}
	fed, _ := w.a.federated()
	bundles := w.a.jwtBundles(fed)
	if bundles == nil {
		return nil, status.Error(codes.Unavailable, "the agent holds no JWT bundle yet (the CA has not been reached); retry")
	}
	// The token's issuer trust domain (its sub) picks the bundle: a
	// federated domain's key never validates a token of this domain.
	svid, err := jwtsvid.ParseAndValidate(req.Svid, bundles, []string{req.Audience})
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "the JWT-SVID is not valid: %v", err)
	}
	claims, err := structpb.NewStruct(svid.Claims)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "the JWT-SVID's claims: %v", err)
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}
