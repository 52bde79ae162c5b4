package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	workload "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/mutual-tls/mutual/internal/agent"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// unprivileged is an existing user other than the test's, to run a
// workload as; nil when the test cannot switch users (not root) or no such
// user exists.
func unprivileged(t *testing.T) *user.User {
	if os.Geteuid() != 0 {
		return nil
	}
	for _, name := range []string{"nobody", "daemon"} {
		u, err := user.Lookup(name)
		if err == nil && u.Uid != "0" {
			return u
		}
	}
	return nil
}

// runWorkload runs the testworkload binary against sock, as u when not nil,
// and returns its one line of output.
func runWorkload(t *testing.T, bin, sock string, u *user.User) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-socket", sock, "-timeout", "5s")
	cmd.Dir = filepath.Dir(bin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if u != nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	out, err := cmd.Output()
	line := strings.TrimSpace(string(out))
	if err != nil && !strings.HasPrefix(line, "error=") {
		t.Fatalf("run %s: %v\nstdout: %s\nstderr: %s", bin, err, out, stderr.String())
	}
	return line
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestAttestation is the attestation table: the same binary run as two
// uids gets two identities; path and hash selectors tell binaries apart;
// a caller that matches no entry is refused with PermissionDenied (and the
// agent's log names its uid and path).
func TestAttestation(t *testing.T) {
	t.Parallel()
	e := testenv.StartCA(t, testenv.Options{})
	base := shortDir(t)
	binDir := filepath.Join(base, "bin")
	if err := os.Mkdir(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// tw and twPath, twNone have the same content (hash) at other paths; twSHA
	// differs in content only.
	var tw, twSHA string
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); tw = buildTestWorkload(t, binDir, "tw", "a") }()
	go func() { defer wg.Done(); twSHA = buildTestWorkload(t, binDir, "tw-sha", "b") }()
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	twPath := filepath.Join(binDir, "tw-path")
	twNone := filepath.Join(binDir, "tw-none")
	copyFile(t, tw, twPath)
	copyFile(t, tw, twNone)
	hashSHA := sha256File(t, twSHA)
	if hashSHA == sha256File(t, tw) {
		t.Fatal("the two testworkload variants have the same hash")
	}

	node := td + "/node/n1"
	self := td + "/ns/attest/self"
	other := td + "/ns/attest/other-user"
	bySHA := td + "/ns/attest/by-sha256"
	byPath := td + "/ns/attest/by-path"
	entry(t, e, self, node, 0, nil, fmt.Sprintf("unix:uid:%d", os.Getuid()), "unix:path:"+tw)
	u := unprivileged(t)
	if u != nil {
		entry(t, e, other, node, 0, nil, "unix:uid:"+u.Uid, "unix:gid:"+u.Gid, "unix:user:"+u.Username, "unix:path:"+tw)
	}
	entry(t, e, bySHA, node, 0, nil, "unix:sha256:"+hashSHA)
	entry(t, e, byPath, node, 0, nil, "unix:path:"+twPath)
	logger, agentLog := testlog.New(t, "agent")
	ra := nodeAgent(t, e, "n1", func(c *agent.Config) { c.Log = logger })

	type tc struct {
		name string
		bin  string
		as   *user.User
		want string // "id=..." or a substring of the error
	}
	cases := []tc{
		{"same binary, test user", tw, nil, "id=" + self},
		{"selected by sha256", twSHA, nil, "id=" + bySHA},
		{"selected by path", twPath, nil, "id=" + byPath},
	}
	if u != nil {
		cases = append(cases, tc{"same binary, user " + u.Username, tw, u, "id=" + other})
	} else {
		t.Log("not root (or no unprivileged user): skipping the run as another uid; CI runs as root")
	}
	for _, c := range cases {
		// The first run may come before the agent holds the certificate.
		testwait.EventuallyNil(t, func() error {
			if got := runWorkload(t, c.bin, ra.sock, c.as); got != c.want {
				return fmt.Errorf("%s: got %q, want %q", c.name, got, c.want)
			}
			return nil
		}, c.name)
	}

	// Unregistered callers: the agent has synced (the cases above passed).
	denied := []tc{{"unregistered path", twNone, nil, ""}}
	if u != nil {
		denied = append(denied, tc{"unregistered path as " + u.Username, twNone, u, ""})
	}
	for _, c := range denied {
		got := runWorkload(t, c.bin, ra.sock, c.as)
		if !strings.HasPrefix(got, "error=") || !strings.Contains(got, "PermissionDenied") || !strings.Contains(got, "no identity issued") {
			t.Errorf("%s: want PermissionDenied (no identity issued), got %q", c.name, got)
		}
		// The caller learns nothing; the log says who was refused.
		uid := strconv.Itoa(os.Getuid())
		if c.as != nil {
			uid = c.as.Uid
		}
		testwait.EventuallyNil(t, func() error {
			for _, line := range strings.Split(agentLog.String(), "\n") {
				if strings.Contains(line, "matches no entry") && strings.Contains(line, "uid="+uid+" ") && strings.Contains(line, "path="+twNone) {
					return nil
				}
			}
			return fmt.Errorf("no line with uid=%s path=%s", uid, twNone)
		}, "a log line naming the refused caller")
	}
}

// TestWorkloadAPISecurityHeader: a request without the Workload API's
// security header is refused with InvalidArgument (and go-spiffe would not
// retry it); the same request with the header reaches attestation.
func TestWorkloadAPISecurityHeader(t *testing.T) {
	t.Parallel()
	e := testenv.StartCA(t, testenv.Options{})
	// An entry this test process does not match, so that attestation runs.
	entry(t, e, td+"/ns/test/nobody-here", td+"/node/n1", 0, nil, "unix:path:/nonexistent/bin")
	ra := nodeAgent(t, e, "n1", nil)

	conn, err := grpc.NewClient("unix://"+ra.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	wl := workload.NewSpiffeWorkloadAPIClient(conn)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	recvSVID := func(ctx context.Context) error {
		st, err := wl.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
		if err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}
	recvBundles := func(ctx context.Context) error {
		st, err := wl.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
		if err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}
	for name, f := range map[string]func(context.Context) error{"FetchX509SVID": recvSVID, "FetchX509Bundles": recvBundles} {
		if err := f(ctx); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s without the security header: want InvalidArgument, got %v", name, err)
		}
		bad := metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "false")
		if err := f(bad); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s with workload.spiffe.io: false: want InvalidArgument, got %v", name, err)
		}
		// With the header the caller is attested: this process matches no entry.
		testwait.EventuallyNil(t, func() error {
			err := f(metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true"))
			if status.Code(err) != codes.PermissionDenied {
				return fmt.Errorf("want PermissionDenied, got %v", err)
			}
			return nil
		}, name+" with the header")
	}

	// go-spiffe's one-shot fetch reports the refusal.
	fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
	defer fcancel()
	if _, err := workloadapi.FetchX509SVID(fctx, addr(ra.sock)); status.Code(err) != codes.PermissionDenied {
		t.Errorf("go-spiffe FetchX509SVID of an unregistered caller: want PermissionDenied, got %v", err)
	}
}
