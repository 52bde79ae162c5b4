package agent_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/agent"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// attackSetup runs a CA and an agent with two entries that select the
// victim binary, one by path and one by hash, and builds the victim and an
// attacker binary (different content, different path).
func attackSetup(t *testing.T) (ra *runningAgent, victim, attacker string, agentLog *testlog.Buffer) {
	t.Helper()
	e := testenv.StartCA(t, testenv.Options{})
	base := shortDir(t)
	binDir := filepath.Join(base, "bin")
	if err := os.Mkdir(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); victim = buildTestWorkload(t, binDir, "victim", "victim") }()
	go func() { defer wg.Done(); attacker = buildTestWorkload(t, binDir, "attacker", "attacker") }()
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	node := td + "/node/n1"
	byPath := td + "/ns/victim/by-path"
	bySHA := td + "/ns/victim/by-sha256"
	entry(t, e, byPath, node, 0, nil, "unix:path:"+victim)
	entry(t, e, bySHA, node, 0, nil, "unix:sha256:"+sha256File(t, victim))
	logger, agentLog := testlog.New(t, "agent")
	ra = nodeAgent(t, e, "n1", func(c *agent.Config) { c.Log = logger })
	// The victim itself gets both identities: the entries work.
	want := "id=" + byPath + "," + bySHA
	testwait.EventuallyNil(t, func() error {
		if got := runWorkload(t, victim, ra.sock, nil); got != want && got != "id="+bySHA+","+byPath {
			return fmt.Errorf("the victim got %q, want %q", got, want)
		}
		return nil
	}, "the victim's identities")
	return ra, victim, attacker, agentLog
}

// TestAttestationForkExecAttack performs the attack on SO_PEERCRED: a
// process connects, then executes the victim binary (so /proc/PID/exe
// names it) while its child, which shares the connection, talks to the
// agent. In fork-exec the child sends the request; in write-exec the
// attacker writes the request before it executes the victim and the child
// reads the answer; in ping-exec the attacker also answers the agent's
// PING before it executes the victim. None may get the victim's identity.
func TestAttestationForkExecAttack(t *testing.T) {
	t.Parallel()
	ra, victim, attacker, agentLog := attackSetup(t)
	for _, mode := range []string{"fork-exec", "write-exec", "ping-exec"} {
		t.Run(mode, func(t *testing.T) {
			line := runAttacker(t, exec.Command(attacker, "-attack", mode, "-socket", ra.sock, "-victim", victim, "-timeout", "20s"))
			if !strings.HasPrefix(line, "error=") {
				t.Fatalf("%s: the attacker got %q: attestation was spoofed", mode, line)
			}
			t.Logf("%s: refused: %s", mode, line)
		})
	}
	if !strings.Contains(agentLog.String(), "cannot be tied to the calling process") {
		t.Errorf("the agent's log does not say why the attacks were refused")
	}
}

// runAttacker starts cmd and returns the first line printed (by the
// attacker's child), then kills the attacker (by then the victim).
func runAttacker(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(out).ReadString('\n')
		lines <- strings.TrimSpace(l)
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(60 * time.Second):
		t.Errorf("the attack printed nothing within 60s")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if t.Failed() || line == "" {
		t.Fatalf("attack output %q; stderr:\n%s", line, stderr.String())
	}
	return line
}

// TestAttestationBindMountAttack performs the attack without exec: an
// unprivileged user makes a user and mount namespace, bind-mounts its own
// binary over the victim's path and runs it there, so /proc/PID/exe shows
// the victim's path. Path and hash selectors must not match a process in
// another mount namespace. It needs root (to run as another user) and
// unshare; it skips elsewhere, and fails under CI=1.
func TestAttestationBindMountAttack(t *testing.T) {
	t.Parallel()
	u := unprivileged(t)
	unshare, lerr := exec.LookPath("unshare")
	if u == nil || lerr != nil {
		msg := "needs root, an unprivileged user and unshare(1) to build the namespaces; CI runs it as root"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ra, victim, attacker, agentLog := attackSetup(t)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	script := fmt.Sprintf("mount --bind %s %s && exec %s -socket %s -timeout 5s", attacker, victim, victim, ra.sock)
	run := func(asUser bool) (string, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var cmd *exec.Cmd
		if asUser {
			cmd = exec.CommandContext(ctx, unshare, "--user", "--map-root-user", "--mount", "sh", "-c", script)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		} else {
			cmd = exec.CommandContext(ctx, unshare, "--mount", "--propagation", "private", "sh", "-c", script)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		b, _ := cmd.Output()
		return string(b), stderr.String()
	}
	b, stderr := run(true)
	if strings.Contains(stderr, "unshare failed") {
		// Unprivileged user namespaces are disabled here: root makes the
		// mount namespace, which is what the agent must notice.
		t.Logf("unprivileged user namespaces unavailable (%s); bind-mounting as root in a new mount namespace", strings.TrimSpace(stderr))
		b, stderr = run(false)
	}
	line := strings.TrimSpace(string(b))
	if strings.HasPrefix(line, "id=") {
		t.Fatalf("the attacker's binary, bind-mounted over %s in its own mount namespace, got %q", victim, line)
	}
	if !strings.Contains(stderr, "variant attacker") {
		t.Fatalf("the attack did not run (%q); stderr:\n%s", line, stderr)
	}
	if !strings.Contains(line, "PermissionDenied") {
		t.Fatalf("want PermissionDenied, got %q; stderr:\n%s", line, stderr)
	}
	testwait.EventuallyNil(t, func() error {
		if !strings.Contains(agentLog.String(), "another mount namespace") {
			return fmt.Errorf("no line names the mount namespace")
		}
		return nil
	}, "the agent's log line")
}
