package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/agent"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// TestRevocationsFollowReenrollment: the node's certificate expires while
// its CA is away, and the token that re-enrolls it comes from the same CA
// served at another address. The agent's revocation watcher must move to
// the new address: a serial revoked there reaches the agent. Before the
// fix it kept following the old, dead address and never heard.
func TestRevocationsFollowReenrollment(t *testing.T) {
	t.Parallel()
	old := testenv.StartCA(t, testenv.Options{})
	node, id := td+"/node/moved", td+"/ns/prod/moved"
	entry(t, old, id, node, 0, nil, fmt.Sprintf("unix:uid:%d", os.Getuid()))
	tok, err := old.Admin.CreateToken(context.Background(), api.TokenRequest{SPIFFEID: node, CertTTL: api.Duration(10 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	base := shortDir(t)
	tokenFile := filepath.Join(base, "token")
	logger, agentLog := testlog.New(t, "agent")
	ra := runAgent(t, agent.Config{StateDir: filepath.Join(base, "state"), Token: tok.Token, TokenFile: tokenFile,
		Socket: filepath.Join(base, "a.sock"), Log: logger})
	// The CA leaves its address before the node can renew.
	old.Stop(t)
	logged := func(s string) func() error {
		return func() error {
			if !agentLog.Contains(s) {
				return fmt.Errorf("no log line %q yet", s)
			}
			return nil
		}
	}
	testwait.EventuallyNil(t, logged("node certificate expired"), "the node certificate to expire")

	moved := testenv.StartCA(t, testenv.Options{CA: old.CA})
	if moved.URL == old.URL {
		t.Fatalf("the CA came back at its old address %s", old.URL)
	}
	if err := os.WriteFile(tokenFile, []byte(moved.Token(t, node, api.TokenRequest{})+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testwait.EventuallyNil(t, logged("node re-enrolled"), "re-enrollment at "+moved.URL)
	served, err := source(t, ra.sock, id).GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	serial := serialOf(served.Certificates[0])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := moved.Admin.Revoke(ctx, api.RevokeRequest{Serial: serial}); err != nil {
		t.Fatal(err)
	}
	testwait.EventuallyNil(t, func() error {
		for _, line := range strings.Split(agentLog.String(), "\n") {
			if strings.Contains(line, "workload certificate revoked") && strings.Contains(line, serial) {
				return nil
			}
		}
		return fmt.Errorf("the agent has not heard of the revocation of %s", serial)
	}, "the revocation at the CA's new address to reach the agent")
	if err := ra.a.Ready(); err != nil {
		t.Errorf("the agent is not ready after following the new address: %v", err)
	}
}
