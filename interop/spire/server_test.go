package spire_test

import (
	"bytes"
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
	"text/template"
	"time"

	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testport"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// spireVersion is the SPIRE release the test runs against; tools/go.mod
// pins the same one.
const spireVersion = "v1.13.3"

// optIn names the environment variable that turns the test on: building
// SPIRE from a cold cache does not fit in `go test ./...`.
const optIn = "MUTUAL_INTEROP_SPIRE"

// spireBuild is the one build of spire-server per test binary.
var spireBuild struct {
	once sync.Once
	bin  string
	err  error
}

// spireServerBinary returns spire-server built from the tools module into
// a cache directory outside the repository (reused across runs; the Go
// build cache makes a rebuild quick). When it cannot be built the test is
// skipped with the reason, except under CI, where that is a failure.
func spireServerBinary(t *testing.T) string {
	t.Helper()
	if os.Getenv(optIn) == "" {
		t.Skipf("SPIRE interop runs with %s=1 (interop/spire/run.sh sets it): a cold build of SPIRE takes longer than go test's default -timeout", optIn)
	}
	spireBuild.once.Do(func() {
		// A cold build takes minutes: it may use the test's time
		// (-timeout) but for what the test itself needs.
		ctx := context.Background()
		if d, ok := t.Deadline(); ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, d.Add(-testTime))
			defer cancel()
		}
		spireBuild.bin, spireBuild.err = buildSPIREServer(ctx)
	})
	if spireBuild.err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("SPIRE %s: %v", spireVersion, spireBuild.err)
		}
		t.Skipf("SPIRE %s cannot be built here, so SPIRE interop is not tested: %v", spireVersion, spireBuild.err)
	}
	return spireBuild.bin
}

// testTime is what the test needs once spire-server is built.
const testTime = 3 * time.Minute

func buildSPIREServer(ctx context.Context) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go command, needed to build spire-server: %w", err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory for the spire-server binary (set XDG_CACHE_HOME): %w", err)
	}
	dir := filepath.Join(cache, "mutual-interop", "spire-"+spireVersion)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("the spire-server cache directory: %w", err)
	}
	tools, err := filepath.Abs("tools")
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, goTool, "build", "-C", tools, "-o", dir+string(filepath.Separator), "github.com/spiffe/spire/cmd/spire-server")
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return "", fmt.Errorf("building spire-server did not finish %s before the test's -timeout; run interop/spire/run.sh (a longer -timeout), or build once with go build -C %s -o %s/ github.com/spiffe/spire/cmd/spire-server", testTime, tools, dir)
	}
	if err != nil {
		return "", fmt.Errorf("go build -C %s github.com/spiffe/spire/cmd/spire-server (needs the Go module proxy on a cold cache): %w\n%s", tools, err, out)
	}
	return filepath.Join(dir, "spire-server"), nil
}

// spireOptions say how a SPIRE server federates with mutual.
type spireOptions struct {
	// Profile is its bundle endpoint's profile and the one it fetches
	// mutual's bundle with: "https_spiffe" or "https_web".
	Profile string
	// MutualURL is mutual's bundle endpoint; MutualTD its trust domain.
	MutualURL, MutualTD string
	// ServingCert and ServingKey are PEM files of the certificate the
	// https_web endpoint serves.
	ServingCert, ServingKey string
	// WebRoots is a PEM file of the roots https_web trusts (mutual's).
	WebRoots string
}

// spireServer is a running `spire-server run` for trust domain spire.test.
type spireServer struct {
	bin, sock string
	// EndpointURL is its bundle endpoint.
	EndpointURL string
	log         *testlog.Buffer
}

const spireConfig = `server {
    bind_address = "127.0.0.1"
    bind_port = "{{.APIPort}}"
    socket_path = "{{.Sock}}"
    trust_domain = "spire.test"
    data_dir = "{{.Dir}}/data"
    log_level = "DEBUG"
    federation {
        bundle_endpoint {
            address = "127.0.0.1"
            port = {{.EndpointPort}}
{{- if eq .Profile "https_web"}}
            profile "https_web" {
                serving_cert_file {
                    cert_file_path = "{{.ServingCert}}"
                    key_file_path = "{{.ServingKey}}"
                    file_sync_interval = "1h"
                }
            }
{{- else}}
            profile "https_spiffe" {}
{{- end}}
        }
        federates_with "{{.MutualTD}}" {
            bundle_endpoint_url = "{{.MutualURL}}"
{{- if eq .Profile "https_web"}}
            bundle_endpoint_profile "https_web" {}
{{- else}}
            bundle_endpoint_profile "https_spiffe" {
                endpoint_spiffe_id = "spiffe://{{.MutualTD}}/mutual/server"
            }
{{- end}}
        }
    }
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "{{.Dir}}/data/datastore.sqlite3"
        }
    }
    KeyManager "memory" {
        plugin_data {}
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
}
`

// startSPIRE runs a SPIRE server as o says until the end of the test and
// waits until it is healthy and its bundle endpoint listens.
func startSPIRE(t *testing.T, o spireOptions) *spireServer {
	t.Helper()
	bin := spireServerBinary(t)
	dir := t.TempDir()
	// The API socket's path must be short (108 bytes).
	sockDir, err := os.MkdirTemp("", "spire")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	endpointPort := testport.Port(t)
	var cfg bytes.Buffer
	if err := template.Must(template.New("spire").Parse(spireConfig)).Execute(&cfg, struct {
		spireOptions
		APIPort, EndpointPort int
		Sock, Dir             string
	}{o, testport.Port(t), endpointPort, filepath.Join(sockDir, "api.sock"), dir}); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(cfgFile, cfg.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &spireServer{bin: bin, sock: filepath.Join(sockDir, "api.sock"), EndpointURL: "https://127.0.0.1:" + strconv.Itoa(endpointPort), log: &testlog.Buffer{}}
	cmd := exec.Command(bin, "run", "-config", cfgFile)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	// https_web trusts the system's roots: here mutual's root alone.
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+o.WebRoots, "SSL_CERT_DIR="+t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatalf("start spire-server: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("spire-server's log:\n%s", s.log)
		}
	})
	testwait.EventuallyNil(t, func() error {
		select {
		case <-done:
			t.Fatalf("spire-server exited: %v\n%s", cmd.ProcessState, s.log)
		default:
		}
		_, err := s.cli("healthcheck")
		return err
	}, "spire-server to be healthy")
	testnet.WaitListening(t, "127.0.0.1:"+strconv.Itoa(endpointPort), s.log.String)
	return s
}

// cli runs a spire-server command against the running server and returns
// its standard output.
func (s *spireServer) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args = append(args, "-socketPath", s.sock)
	cmd := exec.CommandContext(ctx, s.bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("spire-server %s: %w: %s%s", strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	return stdout.String(), nil
}

// mustCLI is cli failing the test on an error.
func (s *spireServer) mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := s.cli(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
