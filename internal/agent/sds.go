package agent

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/selector"
)

// Secret names Envoy asks for, as SPIRE's SDS answers them.
const (
	// SDSDefaultSecret is the tls_certificate of the caller's first identity.
	SDSDefaultSecret = "default"
	// SDSRootCA is the validation_context of the agent's trust domain.
	// Each trust domain's own (the agent's and every federated one) is
	// also served under its trust domain ID, "spiffe://partner.example".
	SDSRootCA = "ROOTCA"
	// SDSAllBundles is one validation_context for peers of every trust
	// domain: Envoy's SPIFFE certificate validator
	// (envoy.tls.cert_validator.spiffe) with each domain's bundle, which
	// verifies a peer against its own trust domain's bundle only.
	SDSAllBundles = "ALL"
	// spiffeValidator is the name of Envoy's SPIFFE certificate validator.
	spiffeValidator = "envoy.tls.cert_validator.spiffe"
	// SDSSecretType is the type URL of an Envoy v3 secret.
	SDSSecretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
)

// registerHealth serves the gRPC health service on the agent's socket:
// SERVING for the server and its services while it runs.
func registerHealth(s *grpc.Server) {
	h := health.NewServer()
	h.SetServingStatus("SpiffeWorkloadAPI", healthpb.HealthCheckResponse_SERVING)
	h.SetServingStatus(secretv3.SecretDiscoveryService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, h)
}

// sdsServer is Envoy's Secret Discovery Service (v3) on the agent socket:
// the caller is attested like any workload (Envoy sends no Workload API
// header), and gets a tls_certificate per identity it is entitled to
// (named by SPIFFE ID, or "default" for the first) and validation_contexts
// ("ROOTCA" or spiffe://TD for one trust domain, the agent's or a federated
// one; "ALL" for all of them through Envoy's SPIFFE validator, as SPIRE
// names them), pushed again at every rotation and bundle change.
type sdsServer struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	w *workloadAPI
}

// validationContexts are the validation_context secrets by name: ROOTCA
// and each trust domain's ID with that domain's roots only, and ALL with
// every domain's roots, kept apart by Envoy's SPIFFE validator. A
// trusted_ca pooling several domains' roots is never served: it would let
// a federated CA vouch for this domain's IDs.
func validationContexts(own spiffeid.TrustDomain, roots []*x509.Certificate, fed federatedSet) (map[string]*tlsv3.Secret, error) {
	all := map[spiffeid.TrustDomain][]*x509.Certificate{own: roots}
	for td, r := range fed.roots {
		if td != own {
			all[td] = r
		}
	}
	out := map[string]*tlsv3.Secret{}
	var tds []*tlsv3.SPIFFECertValidatorConfig_TrustDomain
	for _, td := range sortedTrustDomains(all) {
		pemRoots := &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: pki.EncodeCertificates(all[td]...)}}
		out[td.IDString()] = validationSecret(td.IDString(), &tlsv3.CertificateValidationContext{TrustedCa: pemRoots})
		tds = append(tds, &tlsv3.SPIFFECertValidatorConfig_TrustDomain{Name: td.Name(), TrustBundle: pemRoots})
	}
	out[SDSRootCA] = validationSecret(SDSRootCA, out[own.IDString()].GetValidationContext())
	cfg, err := anypb.New(&tlsv3.SPIFFECertValidatorConfig{TrustDomains: tds})
	if err != nil {
		return nil, err
	}
	out[SDSAllBundles] = validationSecret(SDSAllBundles, &tlsv3.CertificateValidationContext{
		CustomValidatorConfig: &corev3.TypedExtensionConfig{Name: spiffeValidator, TypedConfig: cfg},
	})
	return out, nil
}

// sortedTrustDomains are m's trust domains in name order.
func sortedTrustDomains[V any](m map[spiffeid.TrustDomain]V) []spiffeid.TrustDomain {
	return slices.SortedFunc(maps.Keys(m), func(a, b spiffeid.TrustDomain) int { return strings.Compare(a.Name(), b.Name()) })
}

func validationSecret(name string, vc *tlsv3.CertificateValidationContext) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: vc}}
}

// secrets builds the secrets of names for wl (when names is empty: ROOTCA,
// each federated trust domain's validation context and each identity);
// entries is how many entries wl matches.
func (s *sdsServer) secrets(wl selector.Workload, names []string) (out []*tlsv3.Secret, entries int, err error) {
	ids, entries, _ := s.w.a.match(wl)
	td, roots := s.w.a.roots()
	fed, _ := s.w.a.federated()
	validation, err := validationContexts(td, roots, fed)
	if err != nil {
		return nil, entries, err
	}
	tlsCert := func(name string, id *identity.Identity) (*tlsv3.Secret, error) {
		key, err := pki.MarshalPrivateKey(id.Key, nil, 0)
		if err != nil {
			return nil, err
		}
		return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: pki.EncodeCertificates(id.Chain...)}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: key}},
		}}}, nil
	}
	if len(names) == 0 {
		names = []string{SDSRootCA}
		for _, ftd := range sortedTrustDomains(fed.roots) {
			names = append(names, ftd.IDString())
		}
		for _, id := range ids {
			names = append(names, id.ID.String())
		}
	}
	for _, name := range names {
		sec := validation[name]
		switch {
		case sec != nil:
		case name == SDSDefaultSecret && len(ids) > 0:
			sec, err = tlsCert(name, ids[0])
		default:
			for _, id := range ids {
				if id.ID.String() == name {
					sec, err = tlsCert(name, id)
					break
				}
			}
		}
		if err != nil {
			return nil, entries, err
		}
		if sec != nil {
			out = append(out, sec)
		}
	}
	return out, entries, nil
}

// response wraps secrets in a DiscoveryResponse versioned by their content.
func response(secrets []*tlsv3.Secret, nonce int) (*discoveryv3.DiscoveryResponse, error) {
	resp := &discoveryv3.DiscoveryResponse{TypeUrl: SDSSecretType, Nonce: strconv.Itoa(nonce)}
	h := sha256.New()
	for _, sec := range secrets {
		a, err := anypb.New(sec)
		if err != nil {
			return nil, err
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(sec)
		if err != nil {
			return nil, err
		}
		h.Write(b)
		resp.Resources = append(resp.Resources, a)
	}
	resp.VersionInfo = hex.EncodeToString(h.Sum(nil))[:16]
	return resp, nil
}

// FetchSecrets answers one request.
func (s *sdsServer) FetchSecrets(ctx context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	wl, _, err := s.w.attestPeer(ctx)
	if err != nil {
		return nil, err
	}
	secrets, entries, err := s.secrets(wl, req.ResourceNames)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if entries == 0 {
		return nil, s.w.denied(wl)
	}
	return response(secrets, 0)
}

// StreamSecrets answers each request, and pushes the secrets again when
// they change (rotation, a new bundle), until the stream ends.
func (s *sdsServer) StreamSecrets(stream grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	ctx := stream.Context()
	wl, conn, err := s.w.attestPeer(ctx)
	if err != nil {
		return err
	}
	reqs, recvErr := receive(ctx, stream)
	var (
		names       []string
		asked       bool // a request arrived: names are known
		lastVersion string
		nonce       int
	)
	for {
		changed := s.w.a.changes()
		_, fedChanged := s.w.a.federated()
		send := false
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			if status.Code(err) == codes.Canceled || errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case r := <-reqs:
			if r.ErrorDetail != nil {
				s.w.a.log.Warn("SDS: Envoy rejected the secrets sent", "pid", wl.PID, "version", r.VersionInfo, "error", r.ErrorDetail.Message)
			}
			// A request that is not the ACK of what was last sent (new
			// names, or the first) is answered at once.
			send = !asked || r.ResponseNonce != strconv.Itoa(nonce) || !slices.Equal(names, r.ResourceNames)
			names, asked = r.ResourceNames, true
		case <-changed:
		case <-fedChanged:
		case <-time.After(s.w.a.federatedPoll()):
		}
		if !asked {
			continue
		}
		if pid := conn.foreignPID(); pid != 0 {
			return status.Errorf(codes.PermissionDenied, "no identity issued: %v: PID %d also wrote on the connection", errNotBound, pid)
		}
		secrets, entries, err := s.secrets(wl, names)
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		if entries == 0 {
			return s.w.denied(wl)
		}
		resp, err := response(secrets, nonce+1)
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		if !send && resp.VersionInfo == lastVersion {
			continue
		}
		nonce++
		if err := stream.Send(resp); err != nil {
			return err
		}
		if lastVersion == "" {
			s.w.a.log.Info("SDS: secrets served", "pid", wl.PID, "uid", wl.UID, "path", wl.Path, "names", fmt.Sprint(names))
		}
		lastVersion = resp.VersionInfo
	}
}

// receive reads Envoy's requests into a channel. The reader ends with the
// stream, which gRPC ends when StreamSecrets returns (Recv fails then);
// nothing else can unblock Recv, so nothing waits for it.
func receive(ctx context.Context, stream grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) (<-chan *discoveryv3.DiscoveryRequest, <-chan error) {
	reqs := make(chan *discoveryv3.DiscoveryRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	return reqs, recvErr
}
