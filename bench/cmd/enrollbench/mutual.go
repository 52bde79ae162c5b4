package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
)

const trustDomain = "bench.test"

// mutualCA is one CA directory served by one or more `mutual server`
// replicas on one store.
type mutualCA struct {
	bin   string
	dir   string
	pass  string
	urls  []string
	procs []*exec.Cmd
	admin *client.Client
	roots []*x509.Certificate
}

// startMutual makes a CA in work/name and starts replicas `mutual server`
// on storeURL ("" for the CA directory's SQLite file), and waits until each
// is ready.
func startMutual(ctx context.Context, bin, work, name, storeURL string, replicas int, logs *os.File) (*mutualCA, error) {
	base := filepath.Join(work, name)
	m := &mutualCA{bin: bin, dir: filepath.Join(base, "ca"), pass: filepath.Join(base, "pass")}
	if err := os.MkdirAll(base, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(m.pass, []byte("enrollbench passphrase\n"), 0o600); err != nil {
		return nil, err
	}
	init := exec.CommandContext(ctx, bin, "ca", "init", "--dir", m.dir, "--trust-domain", trustDomain,
		"--passphrase-file", m.pass, "--san", "127.0.0.1")
	if out, err := init.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mutual ca init: %w: %s", err, out)
	}
	var addrs []string
	for range replicas {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		addrs = append(addrs, a)
		m.urls = append(m.urls, "https://"+a)
	}
	for i, a := range addrs {
		h, err := freeAddr()
		if err != nil {
			return nil, err
		}
		args := []string{"server", "--dir", m.dir, "--passphrase-file", m.pass, "--listen", a, "--http-listen", h, "--log-level", "warn"}
		if storeURL != "" {
			args = append(args, "--store", storeURL+fmt.Sprintf("&application_name=enrollbench-%d", i))
		}
		for _, u := range m.urls {
			args = append(args, "--url", u)
		}
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			m.stop()
			return nil, fmt.Errorf("start mutual server: %w", err)
		}
		m.procs = append(m.procs, cmd)
	}
	id, err := identity.Load(filepath.Join(m.dir, "admin"))
	if err != nil {
		m.stop()
		return nil, err
	}
	m.roots = id.Roots
	tc := id.TLSCertificate()
	if m.admin, err = client.New(m.urls, m.roots, &tc); err != nil {
		m.stop()
		return nil, err
	}
	for _, u := range m.urls {
		if err := waitReady(ctx, u+"/readyz", m.pool()); err != nil {
			m.stop()
			return nil, fmt.Errorf("mutual server %s (its output: %s): %w", u, logs.Name(), err)
		}
	}
	return m, nil
}

func (m *mutualCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range m.roots {
		p.AddCert(r)
	}
	return p
}

func (m *mutualCA) target(name string, pgRoot int) *target {
	t := &target{name: name, urls: m.urls, want: http.StatusOK, roots: m.pool(), pgRoot: pgRoot}
	for _, p := range m.procs {
		t.pids = append(t.pids, p.Process.Pid)
	}
	return t
}

// enrollBodies makes n join tokens through the admin API and pairs each
// with a CSR of csrs: the bodies of POST /v1/enroll.
func (m *mutualCA) enrollBodies(ctx context.Context, tag string, n int, csrs []string) ([][]byte, error) {
	bodies := make([][]byte, n)
	var next atomic.Int64
	err := parallel(8, func(int) error {
		for {
			i := int(next.Add(1) - 1)
			if i >= n {
				return nil
			}
			tok, err := m.admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: fmt.Sprintf("spiffe://%s/bench/%s/%d", trustDomain, tag, i)})
			if err != nil {
				return fmt.Errorf("create join token: %w", err)
			}
			if bodies[i], err = json.Marshal(api.EnrollRequest{Token: tok.Token, CSR: csrs[i%len(csrs)]}); err != nil {
				return err
			}
		}
	})
	return bodies, err
}

func (m *mutualCA) stop() {
	if m.admin != nil {
		m.admin.CloseIdleConnections()
	}
	stopAll(m.procs)
}

// stopAll ends each process with SIGTERM, SIGKILL after 10 s.
func stopAll(procs []*exec.Cmd) {
	for _, p := range procs {
		p.Process.Signal(os.Interrupt)
	}
	for _, p := range procs {
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			p.Process.Kill()
			<-done
		}
	}
}

// waitReady polls url until it answers 200, for up to a minute.
func waitReady(ctx context.Context, url string, roots *x509.CertPool) error {
	hc := httpClient(roots)
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(time.Minute)
	var last error
	for time.Now().Before(deadline) {
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("not ready after a minute: %w", last)
}

// freeAddr returns a loopback address with a free port.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// hostOf is the host:port of an https URL.
func hostOf(u string) string { return strings.TrimPrefix(u, "https://") }
