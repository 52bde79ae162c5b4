package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/procfs"
)

// helloBody is what GET /hello answers, from the backend and the bare server.
var helloBody = []byte("hello from the service behind the proxy\n")

// service is the application: GET /hello answers helloBody; POST /sink
// reads the body and answers how many bytes it read.
func service() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(helloBody)))
		w.Write(helloBody)
	})
	mux.HandleFunc("POST /sink", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d\n", n)
	})
	return mux
}

// serve runs hs on addr until ctx is done.
func serve(ctx context.Context, hs *http.Server, addr string, tlsOn bool) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		if tlsOn {
			errc <- hs.ServeTLS(ln, "", "")
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		hs.Close()
		<-errc
		return nil
	}
}

// runBackend is the plaintext HTTP service behind the proxy and nginx.
func runBackend(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "address to serve plaintext HTTP on")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	hs := &http.Server{Handler: service(), ReadHeaderTimeout: 10 * time.Second}
	return serve(ctx, hs, *listen, false)
}

// runBare is the baseline: the same service over HTTPS from crypto/tls,
// requiring and verifying a client certificate against the same roots, with
// the same certificate as the proxy.
func runBare(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("bare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8443", "address to serve HTTPS on")
	dir := fs.String("identity-dir", "", "identity directory (cert.pem, key.pem, bundle.pem)")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("-identity-dir: required")
	}
	id, err := identity.Load(*dir)
	if err != nil {
		return fmt.Errorf("-identity-dir: %w", err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    id.RootPool(),
	}
	hs := &http.Server{Handler: service(), TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second}
	return serve(ctx, hs, *listen, true)
}

// The identities of a run.
const (
	trustDomain = "bench.test"
	serverID    = "spiffe://bench.test/bench/server"
	clientID    = "spiffe://bench.test/load/client"
	allowed     = "spiffe://bench.test/load/*"
)

// makeIdentities creates a CA in dir/ca with the real pki.Init and issues
// the servers' identity (dir/server: the proxy's, the bare server's and
// nginx's, with IP SAN 127.0.0.1) and the load generator's (dir/client).
func makeIdentities(dir string) (server, client *identity.Identity, err error) {
	caDir := filepath.Join(dir, "ca")
	o := pki.InitOptions{
		Dir:         caDir,
		TrustDomain: spiffeid.RequireTrustDomainFromString(trustDomain),
		Passphrase:  []byte("benchmark only"),
		Iterations:  1000,
	}
	if _, err := pki.Init(o); err != nil {
		return nil, nil, err
	}
	ca, err := pki.LoadCA(caDir, o.Passphrase)
	if err != nil {
		return nil, nil, err
	}
	issue := func(id string, ips ...net.IP) (*identity.Identity, error) {
		sid := spiffeid.RequireFromString(id)
		key, err := pki.GenerateKey(pki.KeyECDSAP256, nil)
		if err != nil {
			return nil, err
		}
		cert, err := ca.Issuer.Issue(pki.Leaf{ID: sid, PublicKey: key.Public(), IPAddresses: ips, TTL: 12 * time.Hour, Now: time.Now()})
		if err != nil {
			return nil, err
		}
		return &identity.Identity{ID: sid, Chain: []*x509.Certificate{cert, ca.Issuer.Cert}, Key: key, Roots: ca.Roots}, nil
	}
	if server, err = issue(serverID, net.ParseIP("127.0.0.1")); err != nil {
		return nil, nil, err
	}
	if client, err = issue(clientID); err != nil {
		return nil, nil, err
	}
	if err := server.Save(filepath.Join(dir, "server")); err != nil {
		return nil, nil, err
	}
	if err := client.Save(filepath.Join(dir, "client")); err != nil {
		return nil, nil, err
	}
	return server, client, nil
}

// proc is a server process of the run.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// startProc starts bin with args, pinned to cpus with taskset when cpus is
// not empty, its output going to logPath.
func startProc(name, logPath, cpus, bin string, args ...string) (*proc, error) {
	if cpus != "" {
		args = append([]string{"-c", cpus, bin}, args...)
		bin = "taskset"
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// stop ends the process: SIGTERM (SIGQUIT for nginx, its graceful
// shutdown), then SIGKILL after five seconds.
func (p *proc) stop(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// waitReady waits until addr accepts connections, or the process exits.
func (p *proc) waitReady(ctx context.Context, addr, logPath string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			// Someone listens: make sure it is this process (another
			// program may hold the port, and this one failed to bind).
			select {
			case <-p.done:
			case <-time.After(200 * time.Millisecond):
				return nil
			}
		}
		select {
		case <-p.done:
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("%s exited (%v) before listening on %s:\n%s", p.name, p.err, addr, strings.TrimSpace(string(log)))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not listening on %s after 15s (log: %s)", p.name, addr, logPath)
		}
	}
}

// pids returns the process and its children (nginx's workers).
func (p *proc) pids() []int {
	pid := p.cmd.Process.Pid
	return append([]int{pid}, procfs.Children(pid)...)
}

// machineCPUs is the number of CPUs online, whatever this process's
// affinity (runtime.NumCPU counts only the CPUs it may run on).
func machineCPUs() int {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err == nil {
		if n := cpuCount(strings.TrimSpace(string(b))); n > 0 {
			return n
		}
	}
	return runtime.NumCPU()
}

// rssKiB is the summed VmRSS of the processes.
func rssKiB(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				f := strings.Fields(rest)
				if len(f) > 0 {
					n, _ := strconv.ParseInt(f[0], 10, 64)
					total += n
				}
			}
		}
	}
	return total
}

// freeAddrs returns n distinct loopback addresses whose ports are free at
// the time (all held open until all are chosen, so none repeats).
func freeAddrs(n int) ([]string, error) {
	var out []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		out = append(out, ln.Addr().String())
	}
	return out, nil
}

// nginxConfig is an nginx.conf for mutual TLS in front of the backend, as
// an operator would write it: TLS 1.3, ssl_verify_client on against the
// bundle, a keep-alive upstream pool, the client's certificate passed on in
// a header, one access-log line per request (the proxy logs one too),
// request bodies streamed rather than buffered to disk.
func nginxConfig(dir, listen, backend string, workers int, asRoot bool) string {
	user := ""
	if asRoot {
		user = "user root;\n"
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	return fmt.Sprintf(`# generated by mtlsbench
%sworker_processes %d;
worker_rlimit_nofile 16384;
pid %s;
error_log %s warn;
events {
    worker_connections 8192;
}
http {
    access_log %s;
    client_body_temp_path %s;
    proxy_temp_path %s;
    fastcgi_temp_path %s;
    uwsgi_temp_path %s;
    scgi_temp_path %s;
    keepalive_timeout 600s;
    keepalive_requests 10000000;
    upstream backend {
        server %s;
        keepalive 64;
    }
    server {
        listen %s ssl;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_client_certificate %s;
        ssl_verify_client on;
        ssl_verify_depth 2;
        ssl_protocols TLSv1.3;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-Client-Cert "Hash=$ssl_client_fingerprint;Subject=\"$ssl_client_s_dn\"";
            proxy_request_buffering off;
            client_max_body_size 0;
        }
    }
}
`, user, workers, p("nginx.pid"), p("nginx-error.log"), p("nginx-access.log"),
		p("nginx-body"), p("nginx-proxy"), p("nginx-fastcgi"), p("nginx-uwsgi"), p("nginx-scgi"),
		backend, listen,
		filepath.Join(dir, "server", identity.CertFile), filepath.Join(dir, "server", identity.KeyFile),
		filepath.Join(dir, "server", identity.BundleFile))
}

// findNginx returns the nginx binary: the flag, else PATH, else /usr/sbin.
func findNginx(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	return ""
}
