package procfs_test

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/procfs"
)

// TestProcfs: a child this process starts is listed among its children,
// this process has used CPU time (and a pid that cannot exist none), the
// machine has been busy, and the load average is three numbers.
func TestProcfs(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep to start: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if kids := procfs.Children(os.Getpid()); !slices.Contains(kids, cmd.Process.Pid) {
		t.Errorf("Children(self) = %v, want it to hold %d", kids, cmd.Process.Pid)
	}
	deadline := time.Now().Add(time.Minute)
	for procfs.CPUTime(os.Getpid()) == 0 && time.Now().Before(deadline) {
		for i := 0; i < 1e6; i++ {
			_ = strings.Repeat("x", i%8)
		}
	}
	if procfs.CPUTime(os.Getpid()) == 0 {
		t.Error("CPUTime(self) = 0 after a busy loop")
	}
	if got := procfs.CPUTime(-1); got != 0 {
		t.Errorf("CPUTime(-1) = %v, want 0", got)
	}
	if procfs.MachineBusy() <= 0 {
		t.Error("MachineBusy() <= 0")
	}
	if f := strings.Fields(procfs.LoadAverage()); len(f) != 3 {
		t.Errorf("LoadAverage() = %q, want three fields", procfs.LoadAverage())
	}
}
