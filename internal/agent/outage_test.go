package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/agent"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// fetchOnce asks the agent for the caller's SVIDs with go-spiffe's one-shot
// fetch and returns the one for want, checked against the served bundle.
func fetchOnce(t *testing.T, sock, want string) *x509svid.SVID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	xc, err := workloadapi.FetchX509Context(ctx, addr(sock))
	if err != nil {
		t.Fatalf("go-spiffe fetch from %s: %v", sock, err)
	}
	for _, s := range xc.SVIDs {
		if s.ID.String() != want {
			continue
		}
		if _, _, err := x509svid.Verify(s.Certificates, xc.Bundles); err != nil {
			t.Fatalf("served SVID does not verify: %v", err)
		}
		if time.Now().After(s.Certificates[0].NotAfter) {
			t.Fatalf("served SVID expired at %s", s.Certificates[0].NotAfter)
		}
		return s
	}
	t.Fatalf("no SVID for %s served", want)
	return nil
}

// TestCAOutage: with the CA down, the agent keeps serving the SVID it holds
// (to a client already connected and to new ones), a fresh agent started from
// the same state directory serves from disk, and when the CA comes back on
// the same address and store, rotation resumes without an operator.
func TestCAOutage(t *testing.T) {
	t.Parallel()
	e := testenv.StartCA(t, testenv.Options{})
	id := td + "/ns/prod/outage"
	en := entry(t, e, id, td+"/node/n1", 30*time.Second, nil, fmt.Sprintf("unix:uid:%d", os.Getuid()))
	base := shortDir(t)
	stateDir := filepath.Join(base, "state")
	logger, agentLog := testlog.New(t, "agent 1")
	a1 := runAgent(t, agent.Config{StateDir: stateDir, Token: e.Token(t, td+"/node/n1", api.TokenRequest{}), Socket: filepath.Join(base, "a1.sock"), Log: logger, SyncInterval: time.Second})
	src := source(t, a1.sock, id)

	// The CA goes away.
	e.Stop(t)
	testwait.EventuallyNil(t, func() error {
		if !strings.Contains(agentLog.String(), "cannot reach the CA") {
			return fmt.Errorf("no such log line yet")
		}
		return nil
	}, "the agent noticing the outage")
	held := fetchOnce(t, a1.sock, id)
	if s, err := src.GetX509SVID(); err != nil || s.ID.String() != id {
		t.Fatalf("the connected client lost its SVID during the outage: %v", err)
	}

	// A fresh agent from the same state, with the CA still down and no token.
	src.Close()
	a1.stop(t)
	a2 := runAgent(t, agent.Config{StateDir: stateDir, Socket: filepath.Join(base, "a2.sock"), SyncInterval: time.Second})
	onDisk, err := identity.Load(filepath.Join(stateDir, "svids", en.ID))
	if err != nil {
		t.Fatalf("the workload certificate is not kept under the state directory: %v", err)
	}
	fromDisk := fetchOnce(t, a2.sock, id)
	if serialOf(fromDisk.Certificates[0]) != serialOf(onDisk.Leaf()) {
		t.Fatalf("the restarted agent serves %s, the state directory holds %s", serialOf(fromDisk.Certificates[0]), serialOf(onDisk.Leaf()))
	}
	t.Logf("held %s before the restart, served %s from disk", serialOf(held.Certificates[0]), serialOf(fromDisk.Certificates[0]))
	// Keys are private.
	st, err := os.Stat(filepath.Join(stateDir, "svids", en.ID, identity.KeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("workload key under the state directory: %v %v, want mode 0600", st.Mode().Perm(), err)
	}
	src2 := source(t, a2.sock, id)

	// The CA comes back on the same address and store: rotation resumes.
	e.Start(t)
	first := serialOf(fromDisk.Certificates[0])
	testwait.EventuallyNil(t, func() error {
		s, err := src2.GetX509SVID()
		if err != nil {
			return err
		}
		if got := serialOf(s.Certificates[0]); got == first {
			return fmt.Errorf("still %s", got)
		}
		return nil
	}, "a rotation after the CA came back")
	// And the new certificate is recorded by the CA.
	s, _ := src2.GetX509SVID()
	list, err := e.Admin.ListCertificates(context.Background(), id, false)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range list.Certificates {
		found = found || c.Serial == pki.FormatSerial(s.Certificates[0].SerialNumber)
	}
	if !found {
		t.Errorf("the CA's list of %s certificates does not show the rotated serial %s", id, serialOf(s.Certificates[0]))
	}
}
