package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	workload "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/agent"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testwait"
)

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) > 0 {
			return mf.Metric[0].GetGauge().GetValue()
		}
	}
	return -1
}

// logLineTime returns the time of the first log line containing s.
func logLineTime(log, s string) (time.Time, bool) {
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, s) {
			continue
		}
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], "time=") {
			tm, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(f[0], "time="))
			return tm, err == nil
		}
	}
	return time.Time{}, false
}

// TestNodeExpiresDuringCAOutage (issue 13, item 7): the CA stops for longer
// than the node certificate lives. A connected Workload API stream gets an
// error when the SVID it holds expires; a new caller gets one at once; a
// WARN line and mutual_agent_node_expiring=1 come at three quarters of the
// node certificate's life, before it expires; after it expires, the CA
// coming back is not enough, and a new join token written to --token-file
// re-enrolls the node without a restart, after which workloads get
// identities again.
func TestNodeExpiresDuringCAOutage(t *testing.T) {
	t.Parallel()
	e := testenv.StartCA(t, testenv.Options{})
	node := td + "/node/short"
	id := td + "/ns/prod/outage"
	entry(t, e, id, node, 12*time.Second, nil, fmt.Sprintf("unix:uid:%d", os.Getuid()))
	tok, err := e.Admin.CreateToken(context.Background(), api.TokenRequest{SPIFFEID: node, CertTTL: api.Duration(24 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	base := shortDir(t)
	tokenFile := filepath.Join(base, "token")
	reg := prometheus.NewRegistry()
	logger, agentLog := testlog.New(t, "agent")
	ra := runAgent(t, agent.Config{StateDir: filepath.Join(base, "state"), Token: tok.Token, TokenFile: tokenFile,
		Socket: filepath.Join(base, "a.sock"), Log: logger, Registry: reg, SyncInterval: time.Second})
	nodeID, err := identity.Load(filepath.Join(base, "state", "node"))
	if err != nil {
		t.Fatal(err)
	}
	nodeNotAfter := nodeID.Leaf().NotAfter

	// A raw Workload API stream, holding the first SVID.
	conn, err := grpc.NewClient("unix://"+ra.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	var stream workload.SpiffeWorkloadAPI_FetchX509SVIDClient
	var first *workload.X509SVIDResponse
	testwait.EventuallyNil(t, func() error {
		st, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
		if err != nil {
			return err
		}
		r, err := st.Recv()
		if err != nil {
			return err
		}
		stream, first = st, r
		return nil
	}, "a first SVID on a stream")
	held := fetchOnce(t, ra.sock, id)
	svidNotAfter := held.Certificates[0].NotAfter

	// The CA goes away for longer than the node certificate lives.
	e.Stop(t)
	// The stream ends with an error once what it holds expires (it may see
	// nothing else before: renewals fail).
	for {
		r, err := stream.Recv()
		if err == nil {
			if len(r.Svids) == 0 || string(r.Svids[0].X509Svid) == string(first.Svids[0].X509Svid) {
				continue
			}
			t.Fatalf("the stream got a new SVID with the CA down")
		}
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("the stream ended with %v, want Unavailable", err)
		}
		if now := time.Now(); now.Before(svidNotAfter) {
			t.Fatalf("the stream ended at %s, before the SVID expired at %s", now, svidNotAfter)
		}
		t.Logf("the stream ended when its SVID expired: %v", err)
		break
	}
	// A new caller hears at once.
	fctx, fcancel := context.WithTimeout(context.Background(), 20*time.Second)
	_, err = workloadapi.FetchX509SVID(fctx, addr(ra.sock))
	fcancel()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("a new caller after expiry: want Unavailable at once, got %v", err)
	}

	// Long before the node expires: a WARN line and the gauge.
	testwait.EventuallyNil(t, func() error {
		if _, ok := logLineTime(agentLog.String(), "node certificate has less than a quarter of its life left"); !ok {
			return fmt.Errorf("no warning yet")
		}
		return nil
	}, "the node-expiring warning")
	if warned, _ := logLineTime(agentLog.String(), "node certificate has less than a quarter of its life left"); !warned.Before(nodeNotAfter) {
		t.Errorf("the warning came at %s, not before the node certificate expired at %s", warned, nodeNotAfter)
	}
	if g := gauge(t, reg, "mutual_agent_node_expiring"); g != 1 && time.Now().Before(nodeNotAfter) {
		t.Errorf("mutual_agent_node_expiring = %v, want 1", g)
	}
	testwait.EventuallyNil(t, func() error {
		if !strings.Contains(agentLog.String(), "node certificate expired") {
			return fmt.Errorf("not yet")
		}
		return nil
	}, "the node-expired error")
	if g := gauge(t, reg, "mutual_agent_node_expiring"); g != 1 {
		t.Errorf("mutual_agent_node_expiring = %v after expiry, want 1", g)
	}

	// The CA comes back: the expired node cannot renew by itself.
	e.Start(t)
	fails := func() error {
		fctx, fcancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer fcancel()
		_, err := workloadapi.FetchX509SVID(fctx, addr(ra.sock))
		return err
	}
	if err := fails(); status.Code(err) != codes.Unavailable {
		t.Fatalf("with the node expired and the CA back: want Unavailable, got %v", err)
	}

	// A restart does not help either, but the agent started with
	// --token-file comes up and answers while it waits for a token.
	ra.stop(t)
	ra = runAgent(t, agent.Config{StateDir: filepath.Join(base, "state"), TokenFile: tokenFile,
		Socket: filepath.Join(base, "b.sock"), Log: logger, Registry: prometheus.NewRegistry(), SyncInterval: time.Second})
	if err := fails(); status.Code(err) != codes.Unavailable {
		t.Fatalf("restarted with the node expired: want Unavailable, got %v", err)
	}

	// The documented recovery: a new token for the node in --token-file.
	if err := os.WriteFile(tokenFile, []byte(e.Token(t, node, api.TokenRequest{})+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testwait.EventuallyNil(t, func() error {
		if err := fails(); err != nil {
			return err
		}
		return nil
	}, "an identity after re-enrollment")
	if !strings.Contains(agentLog.String(), "node re-enrolled") {
		t.Errorf("the agent's log does not say the node re-enrolled")
	}
	if got, err := identity.Load(filepath.Join(base, "state", "node")); err != nil || !time.Now().Before(got.Leaf().NotAfter) || got.ID.String() != node {
		t.Errorf("the node identity after re-enrollment: %v", err)
	}
}
