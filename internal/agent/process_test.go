package agent_test

import (
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/testlog"
)

// daemon is a program from outside the project (spiffe-helper, HAProxy, nginx)
// that a test runs in its own process group beside the agent.
type daemon struct {
	name   string
	out    *testlog.Buffer
	exited chan error
}

// startDaemon starts cmd in a process group of its own, collects its
// output, and at the end of the test stops the group (SIGTERM, then
// SIGKILL after 10 s) and shows the output if the test failed.
func startDaemon(t *testing.T, name string, cmd *exec.Cmd) *daemon {
	t.Helper()
	d := &daemon{name: name, out: &testlog.Buffer{}, exited: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { d.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-d.exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, d.out.String())
		}
	})
	return d
}

// alive fails the test if the daemon has exited.
func (d *daemon) alive(t *testing.T) {
	t.Helper()
	select {
	case err := <-d.exited:
		t.Fatalf("%s exited: %v\n%s", d.name, err, d.out.String())
	default:
	}
}
