package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mutual-tls/mutual/internal/procfs"
)

// options are the flags of "mtlsbench run".
type options struct {
	mutual, nginx  string
	caddy, haproxy string
	ghostunnel     string
	caddyLog       bool
	proxyLogAll    bool
	work           string
	keep           bool
	serverCPUs     string
	duration       time.Duration
	rounds         int
	hsConc         int
	kaConc         int
	bulkMiB        int
	bulkRuns       int
	idleConns      int
	rate           float64
	curves         string
	servers        map[string]bool
	tests          map[string]bool
}

var (
	allServers = []string{"bare", "proxy-http", "proxy-tcp", "nginx", "caddy", "haproxy", "ghostunnel"}
	allTests   = []string{"idle", "handshake", "keepalive", "latency", "bulk"}
)

// parseList reads a comma-separated subset of all.
func parseList(flagName, v string, all []string) (map[string]bool, error) {
	out := map[string]bool{}
	for name := range strings.SplitSeq(v, ",") {
		name = strings.TrimSpace(name)
		if !slices.Contains(all, name) {
			return nil, fmt.Errorf("-%s: %q: use some of %s", flagName, name, strings.Join(all, ","))
		}
		out[name] = true
	}
	return out, nil
}

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	var o options
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.mutual, "mutual", "", "the mutual binary (go build ./cmd/mutual); required")
	fs.StringVar(&o.nginx, "nginx", "", "the nginx binary (default: nginx on PATH or /usr/sbin/nginx; none: skip nginx)")
	fs.StringVar(&o.caddy, "caddy", "", "the caddy binary (default: caddy on PATH; none: skip Caddy)")
	fs.BoolVar(&o.proxyLogAll, "proxy-log-all", false, "the proxy logs every forwarded request (--request-log-limit -1) as nginx, Caddy and HAProxy do here; false: its default, 100 lines a second")
	fs.BoolVar(&o.caddyLog, "caddy-log", true, "Caddy writes an access-log line per request (as the proxy, nginx and HAProxy do); false: Caddy's default, no access log")
	fs.StringVar(&o.haproxy, "haproxy", "", "the haproxy binary (default: haproxy on PATH or /usr/sbin; none: skip HAProxy)")
	fs.StringVar(&o.ghostunnel, "ghostunnel", os.Getenv("GHOSTUNNEL"), "the ghostunnel binary, built outside the repository (see bench/README.md; default: $GHOSTUNNEL, else ghostunnel on PATH; none: skip ghostunnel)")
	fs.StringVar(&o.work, "work", "", "directory for certificates, configurations and logs (default: a new temporary one, removed after)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory")
	fs.StringVar(&o.serverCPUs, "server-cpus", "", "CPU list (taskset -c) for the servers and the backend; empty: no pinning")
	fs.DurationVar(&o.duration, "duration", 4*time.Second, "measured time per server per round, for the rate tests")
	fs.IntVar(&o.rounds, "rounds", 2, "rounds of the rate tests, the servers taking turns in each")
	fs.IntVar(&o.hsConc, "handshake-concurrency", 8, "connections being opened at once in the handshake test")
	fs.IntVar(&o.kaConc, "concurrency", 16, "keep-alive connections in the request test, one request in flight on each")
	fs.IntVar(&o.bulkMiB, "bulk-mib", 1024, "MiB uploaded per bulk run")
	fs.IntVar(&o.bulkRuns, "bulk-runs", 3, "bulk runs per server (the median is reported)")
	fs.IntVar(&o.idleConns, "idle-conns", 1000, "idle connections held for the memory test")
	fs.Float64Var(&o.rate, "rate", 4000, "requests per second of the fixed-rate latency test (over -concurrency connections)")
	fs.StringVar(&o.curves, "curves", "x25519", "key exchange the load offers: x25519 (what nginx's OpenSSL 3.0 has) or default (Go's, X25519MLKEM768 first)")
	servers := fs.String("servers", strings.Join(allServers, ","), "servers to measure (bare is the baseline of every ratio)")
	tests := fs.String("tests", strings.Join(allTests, ","), "tests to run")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	var err error
	if o.servers, err = parseList("servers", *servers, allServers); err != nil {
		return nil, err
	}
	if o.tests, err = parseList("tests", *tests, allTests); err != nil {
		return nil, err
	}
	switch {
	case o.mutual == "":
		return nil, errors.New("-mutual: required: the mutual binary (go build -o mutual ./cmd/mutual)")
	case o.duration <= 0 || o.rounds <= 0 || o.hsConc <= 0 || o.kaConc <= 0 || o.bulkMiB <= 0 || o.bulkRuns <= 0 || o.idleConns <= 0 || o.rate <= 0:
		return nil, errors.New("-duration, -rounds, -handshake-concurrency, -concurrency, -bulk-mib, -bulk-runs, -idle-conns and -rate must be positive")
	case o.curves != "x25519" && o.curves != "default":
		return nil, fmt.Errorf("-curves %q: use x25519 or default", o.curves)
	}
	if _, err := os.Stat(o.mutual); err != nil {
		return nil, fmt.Errorf("-mutual: %w", err)
	}
	if o.serverCPUs != "" {
		if _, err := exec.LookPath("taskset"); err != nil {
			return nil, fmt.Errorf("-server-cpus: %w (install util-linux)", err)
		}
		if cpuCount(o.serverCPUs) == 0 {
			return nil, fmt.Errorf("-server-cpus %q: use a taskset list such as 0 or 0-1", o.serverCPUs)
		}
	}
	return &o, nil
}

// cpuCount counts the CPUs of a taskset list ("0", "0-1", "0,2-3").
func cpuCount(list string) int {
	n := 0
	for part := range strings.SplitSeq(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return 0
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return 0
			}
		}
		n += b - a + 1
	}
	return n
}

// target is a server under test.
type target struct {
	key, name string
	addr      string
	proc      *proc
	// results
	idleKiB float64
	rssKiB  int64 // after the whole load
	hs, ka  rate
	// per round of the rate tests, for the ratios printed per round
	hsRounds, kaRounds []rate
	fixed              rate // the fixed-rate latency test
	bulk               bulkResult
	bulkErr            error
	idleErr            error
	disabled           bool
}

func (t *target) pids() []int {
	if t.proc == nil {
		return nil
	}
	return t.proc.pids()
}

func (t *target) probe(ours func() []int) probe { return probe{server: t.pids, ours: ours} }

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if o.work == "" {
		if o.work, err = os.MkdirTemp("", "mtlsbench-"); err != nil {
			return err
		}
		if !o.keep {
			defer os.RemoveAll(o.work)
		}
	} else if err := os.MkdirAll(o.work, 0o700); err != nil {
		return err
	}
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, format+"\n", a...) }
	_, client, err := makeIdentities(o.work)
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	var curves []tls.CurveID
	if o.curves == "x25519" {
		curves = []tls.CurveID{tls.X25519}
	}
	cfg := clientConfig(client, curves)
	ncpu := machineCPUs()
	if o.serverCPUs != "" {
		ncpu = cpuCount(o.serverCPUs)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}

	var procs []*proc
	defer func() {
		for _, p := range slices.Backward(procs) {
			sig := syscall.SIGTERM
			if p.name == "nginx" {
				sig = syscall.SIGQUIT
			}
			p.stop(sig)
		}
	}()
	start := func(name, addr string, bin string, args ...string) (*proc, error) {
		logPath := filepath.Join(o.work, name+".log")
		p, err := startProc(name, logPath, o.serverCPUs, bin, args...)
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
		logf("started %s: pid %d, %s, log %s", name, p.cmd.Process.Pid, addr, logPath)
		return p, p.waitReady(ctx, addr, logPath)
	}
	addrs, err := freeAddrs(8)
	if err != nil {
		return err
	}
	backendAddr, proxyHTTPAddr, proxyTCPAddr, bareAddr, nginxAddr := addrs[0], addrs[1], addrs[2], addrs[3], addrs[4]
	caddyAddr, haproxyAddr, ghostunnelAddr := addrs[5], addrs[6], addrs[7]
	if _, err := start("backend", backendAddr, self, "backend", "-listen", backendAddr); err != nil {
		return err
	}
	serverDir := filepath.Join(o.work, "server")
	proxyArgs := func(listen, protocol string) []string {
		// The identities come straight from the intermediate, with no CA
		// service to learn revocations from: say so, as the proxy requires.
		args := []string{"proxy", "inbound", "--listen", listen, "--target", backendAddr, "--identity-dir", serverDir,
			"--allow", allowed, "--protocol", protocol, "--no-revocation"}
		if o.proxyLogAll {
			args = append(args, "--request-log-limit", "-1")
		}
		return args
	}
	targets := []*target{
		{key: "bare", name: "bare crypto/tls", addr: bareAddr},
		{key: "proxy-http", name: "mutual proxy (http)", addr: proxyHTTPAddr},
		{key: "proxy-tcp", name: "mutual proxy (tcp)", addr: proxyTCPAddr},
		{key: "nginx", name: "nginx", addr: nginxAddr},
		{key: "caddy", name: "Caddy", addr: caddyAddr},
		{key: "haproxy", name: "HAProxy", addr: haproxyAddr},
		{key: "ghostunnel", name: "ghostunnel", addr: ghostunnelAddr},
	}
	byKey := map[string]*target{}
	for _, t := range targets {
		byKey[t.key] = t
	}
	for _, t := range targets {
		t.disabled = !o.servers[t.key]
	}
	nginxVersion, caddyVersion, haproxyVersion, ghostunnelVersion := "not run", "not run", "not run", "not run"
	// startPeer writes a peer's configuration file and starts it; a peer
	// whose binary is missing keeps an empty column.
	startPeer := func(t *target, bin, conf, text string, args ...string) (err error) {
		if bin == "" {
			logf("%s not found (apt-get install -y %s): its column stays empty", t.key, t.key)
			t.disabled = true
			return nil
		}
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return err
		}
		t.proc, err = start(t.key, t.addr, bin, args...)
		return err
	}
	launch := map[string]func(t *target) error{
		"bare": func(t *target) (err error) {
			t.proc, err = start("bare", bareAddr, self, "bare", "-listen", bareAddr, "-identity-dir", serverDir)
			return err
		},
		"proxy-http": func(t *target) (err error) {
			t.proc, err = start("proxy-http", proxyHTTPAddr, o.mutual, proxyArgs(proxyHTTPAddr, "http")...)
			return err
		},
		"proxy-tcp": func(t *target) (err error) {
			t.proc, err = start("proxy-tcp", proxyTCPAddr, o.mutual, proxyArgs(proxyTCPAddr, "tcp")...)
			return err
		},
		"nginx": func(t *target) (err error) {
			bin := ""
			if o.nginx != "none" {
				bin = findNginx(o.nginx)
			}
			if bin == "" {
				logf("nginx not found (apt-get install -y nginx): its column stays empty")
				t.disabled = true
				return nil
			}
			out, _ := exec.Command(bin, "-v").CombinedOutput()
			nginxVersion = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: "))
			conf := filepath.Join(o.work, "nginx.conf")
			if err := os.WriteFile(conf, []byte(nginxConfig(o.work, nginxAddr, backendAddr, ncpu, os.Geteuid() == 0)), 0o644); err != nil {
				return err
			}
			t.proc, err = start("nginx", nginxAddr, bin, "-e", filepath.Join(o.work, "nginx-error.log"),
				"-p", o.work, "-c", conf, "-g", "daemon off;")
			return err
		},
		"caddy": func(t *target) error {
			bin := findBin(o.caddy, "caddy")
			caddyVersion = version(bin, "version")
			conf := filepath.Join(o.work, "Caddyfile")
			return startPeer(t, bin, conf, caddyConfig(o.work, caddyAddr, backendAddr, o.caddyLog), "run", "--adapter", "caddyfile", "--config", conf)
		},
		"haproxy": func(t *target) error {
			bin := findBin(o.haproxy, "haproxy")
			haproxyVersion = version(bin, "-v")
			crt, err := haproxyPEM(o.work)
			if err != nil {
				return err
			}
			conf := filepath.Join(o.work, "haproxy.cfg")
			return startPeer(t, bin, conf, haproxyConfig(haproxyAddr, backendAddr, crt, haproxyBundle(o.work), ncpu), "-db", "-f", conf)
		},
		"ghostunnel": func(t *target) (err error) {
			bin := findBin(o.ghostunnel, "ghostunnel")
			if bin == "" {
				logf("ghostunnel not found (build it as bench/README.md says, then -ghostunnel PATH or GHOSTUNNEL=PATH): its column stays empty")
				t.disabled = true
				return nil
			}
			ghostunnelVersion = version(bin, "--version")
			t.proc, err = start("ghostunnel", ghostunnelAddr, bin, ghostunnelArgs(o.work, ghostunnelAddr, backendAddr)...)
			return err
		},
	}
	for _, t := range targets {
		if t.disabled {
			continue
		}
		if err := launch[t.key](t); err != nil {
			return err
		}
	}
	active := slices.DeleteFunc(slices.Clone(targets), func(t *target) bool { return t.disabled })
	ours := func() []int {
		pids := []int{os.Getpid()}
		for _, p := range procs {
			pids = append(pids, p.pids()...)
		}
		return pids
	}

	fmt.Fprintf(stdout, "## mtlsbench %s\n\n", time.Now().UTC().Format(time.RFC3339))
	pin := "not pinned: servers and load share every CPU"
	if o.serverCPUs != "" {
		pin = fmt.Sprintf("servers and backend on CPUs %s (taskset); load generator: %s", o.serverCPUs, affinity())
	}
	fmt.Fprintf(stdout, "- machine: %d CPUs (%s), %s, %s\n", machineCPUs(), cpuModel(), kernel(), runtime.Version())
	fmt.Fprintf(stdout, "- pinning: %s\n", pin)
	fmt.Fprintf(stdout, "- Go servers: GOMAXPROCS follows their affinity (%d); nginx %s: worker_processes %d\n", ncpu, nginxVersion, ncpu)
	fmt.Fprintf(stdout, "- Caddy %s; HAProxy %s: nbthread %d; ghostunnel %s\n", caddyVersion, haproxyVersion, ncpu, ghostunnelVersion)
	fmt.Fprintf(stdout, "- load average at the start: %s\n", procfs.LoadAverage())
	proxyLog := "up to 100 forwarded requests a second (its default; -proxy-log-all: every one)"
	if o.proxyLogAll {
		proxyLog = "every request (-proxy-log-all)"
	}
	fmt.Fprintf(stdout, "- request logs: nginx, HAProxy and Caddy (-caddy-log=%v) a line per request; the proxy (http) %s\n", o.caddyLog, proxyLog)
	fmt.Fprintf(stdout, "- TLS 1.3, ECDSA P-256 certificates (leaf + intermediate), key exchange %s, no resumption\n", curveName(o.curves))
	fmt.Fprintf(stdout, "- server CPU = the server process(es) only (nginx: master + workers); the backend's is not counted\n\n")

	// Warm every server: lazy set-up is not a connection's cost.
	for _, t := range active {
		c, err := dial(t.addr, cfg)
		if err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		for range 20 {
			if err := c.get(reqHello); err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
		}
		c.Close()
	}

	// Idle memory first, while the processes hold no memory from load.
	for _, t := range active {
		if !o.tests["idle"] {
			break
		}
		logf("idle memory: %s, %d connections", t.name, o.idleConns)
		time.Sleep(time.Second)
		before := rssKiB(t.pids())
		conns, err := openIdle(ctx, t.addr, cfg, o.idleConns)
		if err != nil {
			t.idleErr = err
			continue
		}
		time.Sleep(2 * time.Second)
		after := rssKiB(t.pids())
		t.idleKiB = float64(after-before) / float64(o.idleConns)
		closeAll(conns)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	time.Sleep(2 * time.Second)

	for r := range o.rounds {
		if !o.tests["handshake"] {
			break
		}
		for _, t := range rotate(active, r) {
			logf("handshakes: %s, round %d", t.name, r+1)
			res := handshakes(ctx, t.addr, cfg, o.hsConc, o.duration, t.probe(ours))
			t.hsRounds = append(t.hsRounds, res)
			t.hs = merge(t.hs, res)
			time.Sleep(time.Second)
		}
	}
	for r := range o.rounds {
		if !o.tests["keepalive"] {
			break
		}
		for _, t := range rotate(active, r) {
			logf("keep-alive requests: %s, round %d", t.name, r+1)
			res := keepAlive(ctx, t.addr, cfg, o.kaConc, o.duration, t.probe(ours))
			t.kaRounds = append(t.kaRounds, res)
			t.ka = merge(t.ka, res)
		}
	}
	for r := range o.rounds {
		if !o.tests["latency"] {
			break
		}
		for _, t := range rotate(active, r) {
			logf("latency at %.0f requests/s: %s, round %d", o.rate, t.name, r+1)
			t.fixed = merge(t.fixed, fixedRate(ctx, t.addr, cfg, o.kaConc, o.rate, o.duration, t.probe(ours)))
		}
	}
	size := int64(o.bulkMiB) << 20
	bulks := map[*target][]bulkResult{}
	for r := range o.bulkRuns {
		if !o.tests["bulk"] {
			break
		}
		for _, t := range rotate(active, r) {
			logf("bulk upload: %s, run %d", t.name, r+1)
			res, err := bulk(t.addr, cfg, size, t.probe(ours))
			if err != nil {
				t.bulkErr = err
				continue
			}
			bulks[t] = append(bulks[t], res)
		}
	}
	for t, rs := range bulks {
		slices.SortFunc(rs, func(a, b bulkResult) int { return cmpFloat(a.mbps, b.mbps) })
		med := rs[len(rs)/2]
		sum := bulkResult{mbps: med.mbps}
		for _, r := range rs {
			sum.cpu += r.cpu
			sum.others += r.others
			sum.elapsed += r.elapsed
			sum.n += r.n
		}
		t.bulk = sum
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for _, t := range active {
		t.rssKiB = rssKiB(t.pids())
	}
	for _, t := range active {
		for _, e := range []error{t.idleErr, t.bulkErr, t.hs.firstErr, t.ka.firstErr, t.fixed.firstErr} {
			if e != nil {
				fmt.Fprintf(stdout, "- %s: error: %v\n", t.name, e)
			}
		}
	}
	rep := &report{o: o, ncpu: ncpu}
	for _, mode := range []string{"proxy-http", "proxy-tcp"} {
		if !byKey[mode].disabled {
			rep.table(stdout, byKey[mode], byKey["bare"], byKey["nginx"], byKey["caddy"], byKey["haproxy"], byKey["ghostunnel"])
		}
	}
	rep.goals(stdout, byKey)
	if o.keep {
		fmt.Fprintf(stdout, "work directory (certificates, nginx.conf, logs): %s\n", o.work)
	}
	return nil
}

// rotate returns ts starting at the r-th, so each server takes each turn.
func rotate(ts []*target, r int) []*target {
	r %= len(ts)
	return append(slices.Clone(ts[r:]), ts[:r]...)
}

func merge(a, b rate) rate {
	a.ops += b.ops
	a.errs += b.errs
	a.elapsed += b.elapsed
	a.cpu += b.cpu
	a.lat = append(a.lat, b.lat...)
	slices.Sort(a.lat)
	if a.firstErr == nil {
		a.firstErr = b.firstErr
	}
	return a
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func curveName(c string) string {
	if c == "x25519" {
		return "X25519 (the load offers only it)"
	}
	return "Go's default (X25519MLKEM768 where the server has it)"
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "Linux"
	}
	return "Linux " + strings.TrimSpace(string(b))
}

// affinity reports this process's allowed CPUs.
func affinity() string {
	b, _ := os.ReadFile("/proc/self/status")
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return "CPUs " + strings.TrimSpace(v)
		}
	}
	return "unknown"
}
