package agent_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/mutual-tls/mutual/internal/agent"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testenv"
)

func dialAgent(t *testing.T, sock string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// sdsSecrets decodes a DiscoveryResponse: the tls_certificate named want
// (its chain and key, checked to belong together and to verify against
// the ROOTCA validation context sent with it).
func sdsSecrets(t *testing.T, resp *discoveryv3.DiscoveryResponse, want string) *x509.Certificate {
	t.Helper()
	if resp.TypeUrl != agent.SDSSecretType || resp.VersionInfo == "" || resp.Nonce == "" {
		t.Fatalf("response type %q version %q nonce %q", resp.TypeUrl, resp.VersionInfo, resp.Nonce)
	}
	var chain []*x509.Certificate
	var keyPEM []byte
	var roots []*x509.Certificate
	for _, a := range resp.Resources {
		var s tlsv3.Secret
		if err := a.UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case s.Name == want && s.GetTlsCertificate() != nil:
			tc := s.GetTlsCertificate()
			if chain, err = pki.ParseCertificates(tc.CertificateChain.GetInlineBytes()); err != nil {
				t.Fatal(err)
			}
			keyPEM = tc.PrivateKey.GetInlineBytes()
		case s.Name == agent.SDSRootCA && s.GetValidationContext() != nil:
			if roots, err = pki.ParseCertificates(s.GetValidationContext().TrustedCa.GetInlineBytes()); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected secret %q", s.Name)
		}
	}
	if chain == nil || roots == nil {
		t.Fatalf("want the secrets %q and %q, got %d resources", want, agent.SDSRootCA, len(resp.Resources))
	}
	key, err := pki.ParsePrivateKey(keyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !pki.PublicKeysEqual(key.Public(), chain[0].PublicKey) {
		t.Fatal("the SDS key does not match its certificate")
	}
	if _, err := pki.VerifyChain(chain, roots, time.Time{}, x509.ExtKeyUsageAny); err != nil {
		t.Fatalf("the SDS certificate does not verify against ROOTCA: %v", err)
	}
	return chain[0]
}

// TestSDSStreamsAndPushesRotation: an SDS client from go-control-plane
// (as Envoy speaks it) streams the caller's certificate and the bundle from
// the agent socket, ACKs, and is pushed the rotated certificate; a caller
// with no entry is refused; FetchSecrets and gRPC health answer too.
func TestSDSStreamsAndPushesRotation(t *testing.T) {
	t.Parallel()
	e := testenv.StartCA(t, testenv.Options{})
	id := td + "/ns/test/envoy"
	entry(t, e, id, td+"/node/s1", 6*time.Second, nil, fmt.Sprintf("unix:uid:%d", os.Getuid()))
	ra := nodeAgent(t, e, "s1", nil)
	source(t, ra.sock, id) // the agent has synced its entries: SDS must not deny
	conn := dialAgent(t, ra.sock)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hc.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("gRPC health on the agent socket: %v %v", hc, err)
	}

	sds := secretv3.NewSecretDiscoveryServiceClient(conn)
	stream, err := sds.StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: agent.SDSSecretType, ResourceNames: []string{id, agent.SDSRootCA}}); err != nil {
		t.Fatal(err)
	}
	// The first answers may hold only ROOTCA until the certificate is
	// obtained: read until it is there, ACKing each.
	var first *x509.Certificate
	for first == nil {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Resources) == 2 {
			first = sdsSecrets(t, resp, id)
		}
		if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: agent.SDSSecretType, ResourceNames: []string{id, agent.SDSRootCA}, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := x509svid.IDFromCert(first); err != nil || got.String() != id {
		t.Fatalf("SDS certificate for %v, want %s", got, id)
	}
	// Rotation at half-life is pushed without another request.
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("no push after rotation: %v", err)
	}
	next := sdsSecrets(t, resp, id)
	if next.SerialNumber.Cmp(first.SerialNumber) == 0 || pki.PublicKeysEqual(next.PublicKey, first.PublicKey) {
		t.Fatal("the push carries the same certificate or key")
	}

	// "default" names the caller's first identity; FetchSecrets answers once.
	one, err := sds.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: agent.SDSSecretType, ResourceNames: []string{agent.SDSDefaultSecret, agent.SDSRootCA}})
	if err != nil {
		t.Fatal(err)
	}
	sdsSecrets(t, one, agent.SDSDefaultSecret)

	// A caller no entry matches gets nothing.
	entry(t, e, td+"/ns/test/other", td+"/node/s2", 0, nil, "unix:uid:54321")
	rb := nodeAgent(t, e, "s2", nil)
	other, err := secretv3.NewSecretDiscoveryServiceClient(dialAgent(t, rb.sock)).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Send(&discoveryv3.DiscoveryRequest{TypeUrl: agent.SDSSecretType}); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("SDS for a caller with no entry: %v, want PermissionDenied", err)
	}
}
