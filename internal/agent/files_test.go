package agent_test

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/agent"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/testca"
)

// needRootAndUser returns an unprivileged user, skipping the test when it
// cannot run as root (and failing under CI=1, which runs as root).
func needRootAndUser(t *testing.T) (uid, gid int, name string) {
	t.Helper()
	u := unprivileged(t)
	if u == nil {
		msg := "needs root and an unprivileged user (nobody or daemon); CI runs it as root"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, u.Username
}

// TestWriteOwnerSymlinkSwapRace attacks --write ...,owner=USER: the owner
// (a real process running as that user) keeps replacing every name in the
// directory with a symbolic link to a root-only file while the root agent
// writes the identity again and again. The root file must stay root's,
// unchanged; when the attack stops, the directory holds a whole set owned
// by the user with the requested modes.
func TestWriteOwnerSymlinkSwapRace(t *testing.T) {
	t.Parallel()
	uid, gid, name := needRootAndUser(t)
	base := shortDir(t)
	dir := filepath.Join(base, "tls")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The directory belongs to the owner, who can rename anything in it.
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(base, "root-secret")
	if err := os.WriteFile(secret, []byte("root only\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tw := buildTestWorkload(t, base, "tw", "swap")

	cmd := exec.Command(tw, "-swap", dir, "-target", secret)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	defer stop()
	ready := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(out).ReadString('\n')
		ready <- l
	}()
	select {
	case l := <-ready:
		if strings.TrimSpace(l) != "ready" {
			t.Fatalf("the swapper did not start: %q %s", l, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the swapper did not start: %s", stderr.String())
	}

	ca := testca.New(t)
	urls := []string{"https://127.0.0.1:8443"}
	ws, err := agent.ParseWriteSpec(td + "/ns/prod/web=" + dir + ",owner=" + name + ",mode=0600")
	if err != nil {
		t.Fatal(err)
	}
	checkSecret := func(after string) {
		t.Helper()
		var st syscall.Stat_t
		if err := syscall.Lstat(secret, &st); err != nil {
			t.Fatalf("%s: %v", after, err)
		}
		b, _ := os.ReadFile(secret)
		if st.Uid != 0 || st.Mode&0o777 != 0o600 || string(b) != "root only\n" {
			t.Fatalf("%s: the root-only file is now uid %d mode %o content %q: the owner took it over", after, st.Uid, st.Mode&0o777, b)
		}
	}
	failures := 0
	for i := 0; i < 150; i++ {
		id := ca.Leaf(t, td+"/ns/prod/web")
		if err := agent.WriteIdentityFiles(ws, id, urls); err != nil {
			failures++ // the owner may break its own directory; it must not get more
		}
		checkSecret("after write " + strconv.Itoa(i+1))
	}
	stop()
	t.Logf("150 writes under attack, %d failed", failures)

	// The attack over, one write repairs the directory: a whole set.
	id := ca.Leaf(t, td+"/ns/prod/web")
	if err := agent.WriteIdentityFiles(ws, id, urls); err != nil {
		t.Fatalf("write after the attack: %v", err)
	}
	checkSecret("after the attack")
	got, err := identity.Load(dir)
	if err != nil {
		t.Fatalf("identity.Load of the written directory: %v", err)
	}
	if !got.Leaf().Equal(id.Leaf()) {
		t.Fatalf("the directory holds another certificate")
	}
	if u, err := client.LoadCAURLs(dir); err != nil || len(u) != 1 || u[0] != urls[0] {
		t.Errorf("mutual.json: %v %v, want the CA address", u, err)
	}
	for f, mode := range map[string]os.FileMode{identity.KeyFile: 0o600, identity.CertFile: 0o644, identity.BundleFile: 0o644, client.ServersFile: 0o644} {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(dir, f), &st); err != nil {
			t.Fatal(err)
		}
		if int(st.Uid) != uid || int(st.Gid) != gid || os.FileMode(st.Mode&0o777) != mode {
			t.Errorf("%s: uid %d gid %d mode %o, want %d %d %o", f, st.Uid, st.Gid, st.Mode&0o777, uid, gid, mode)
		}
	}
}

// TestWriteRefusesUnsafeDirectory: a write directory that a user other
// than root and the owner can write (or one under such a directory) is
// refused, with an error that says so, and nothing is written.
func TestWriteRefusesUnsafeDirectory(t *testing.T) {
	t.Parallel()
	uid, gid, name := needRootAndUser(t)
	ca := testca.New(t)
	id := ca.Leaf(t, td+"/ns/prod/web")
	base := shortDir(t)
	mk := func(rel string, mode os.FileMode, owner int) string {
		p := filepath.Join(base, rel)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, owner, gid); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := map[string]string{
		"world-writable":                 mk("ww", 0o777|os.ModeSticky, 0),
		"group-writable (not root)":      mk("gw", 0o775, 0),
		"under a user's directory":       filepath.Join(mk("home", 0o755, uid), "tls"),
		"owned by another non-root user": mk("other", 0o755, 1),
	}
	for what, dir := range cases {
		owner := name
		if what == "owned by another non-root user" || what == "under a user's directory" {
			owner = "root"
		}
		ws, err := agent.ParseWriteSpec(td + "/ns/prod/web=" + dir + ",owner=" + owner)
		if err != nil {
			t.Fatal(err)
		}
		err = agent.WriteIdentityFiles(ws, id, nil)
		if err == nil || !strings.Contains(err.Error(), "not safe") {
			t.Errorf("%s (%s): want a refusal, got %v", what, dir, err)
			continue
		}
		t.Logf("%s: %v", what, err)
		if _, err := os.Lstat(filepath.Join(dir, identity.KeyFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: a key file was written", what)
		}
	}
}

// TestReloadCommandUmask: a reload command that builds a combined key file
// (as HAProxy needs) makes it readable by its owner only, whatever the
// agent's umask (issue 12, item 16).
func TestReloadCommandUmask(t *testing.T) {
	t.Parallel()
	ca := testca.New(t)
	base := shortDir(t)
	dir := filepath.Join(base, "tls")
	combined := filepath.Join(base, "combined.pem")
	reload := "cat " + filepath.Join(dir, identity.KeyFile) + " " + filepath.Join(dir, identity.CertFile) + " > " + combined
	ws, err := agent.ParseWriteSpec(td + "/ns/prod/web=" + dir + ",reload=" + reload)
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.WriteIdentityFiles(ws, ca.Leaf(t, td+"/ns/prod/web"), nil); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(combined)
	if err != nil {
		t.Fatalf("the reload command did not run: %v", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		t.Fatalf("the combined key file the reload command built is mode %o: readable by others", st.Mode().Perm())
	}
	if b, _ := os.ReadFile(combined); !bytes.Contains(b, []byte("PRIVATE KEY")) {
		t.Fatalf("the combined file holds no key")
	}
}
