// Package procfs reads what the benchmarks (bench/cmd's harnesses, the
// proxy's benchmarks) measure from Linux's /proc: a process's CPU time,
// its children, the machine's busy time and its load average.
package procfs

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

type stat struct {
	ppid         int
	utime, stime uint64 // clock ticks
}

// readStat reads /proc/PID/stat; false once the process is gone.
func readStat(pid int) (stat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces and parentheses
	if i < 0 {
		return stat{}, false
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return stat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return stat{ppid: ppid, utime: ut, stime: st}, true
}

// CPUTime is the user+system CPU time of the processes; a process that is
// gone counts 0.
func CPUTime(pids ...int) time.Duration {
	var t uint64
	for _, pid := range pids {
		if st, ok := readStat(pid); ok {
			t += st.utime + st.stime
		}
	}
	return time.Duration(t) * clockTick
}

// MachineBusy is the CPU time the whole machine spent in user and system
// mode (interrupts excluded), from /proc/stat.
func MachineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle ...
	var t uint64
	for _, s := range f[1:min(4, len(f))] {
		n, _ := strconv.ParseUint(s, 10, 64)
		t += n
	}
	return time.Duration(t) * clockTick
}

// Children lists the processes whose parent is pid.
func Children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(n); ok && st.ppid == pid {
			out = append(out, n)
		}
	}
	return out
}

// LoadAverage is the machine's 1, 5 and 15 minute load averages from
// /proc/loadavg, or "unknown".
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
