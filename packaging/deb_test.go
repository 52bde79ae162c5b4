// Package packaging_test builds the Debian package with build-deb.sh and
// checks what an operator installs: contents, modes, units, and (on CI, or
// with MUTUAL_TEST_DPKG_INSTALL=1) a real dpkg -i and purge on this machine.
package packaging_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// need skips t without the tool outside CI, and fails it on CI (.ci/run
// installs them).
func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is missing on CI: .ci/run must install it", tool)
			}
			t.Skipf("%s is not installed (apt-get install dpkg systemd); the package is not checked", tool)
		}
	}
}

func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// buildDeb runs build-deb.sh and returns the package's path.
func buildDeb(t *testing.T) string {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command("./build-deb.sh", out)
	cmd.Env = append(os.Environ(), "MUTUAL_VERSION=0.0.0~test")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("build-deb.sh: %v\n%s", err, stderr.String())
	}
	deb := strings.TrimSpace(stdout.String())
	if _, err := os.Stat(deb); err != nil || filepath.Dir(deb) != out {
		t.Fatalf("build-deb.sh printed %q, not a package in %s: %v", deb, out, err)
	}
	return deb
}

// entry is one line of `dpkg-deb -c`.
type entry struct{ mode, owner string }

func contents(t *testing.T, deb string) map[string]entry {
	t.Helper()
	m := map[string]entry{}
	for _, line := range strings.Split(strings.TrimSpace(sh(t, "dpkg-deb", "-c", deb)), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb -c line %q", line)
		}
		m[strings.TrimSuffix(strings.TrimPrefix(f[5], "."), "/")] = entry{f[0], f[1]}
	}
	return m
}

// TestDebianPackage builds the package and checks it as dpkg and systemd
// will see it.
func TestDebianPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a package: not in -short")
	}
	need(t, "dpkg-deb", "systemd-analyze", "git")
	deb := buildDeb(t)

	files := contents(t, deb)
	want := map[string]entry{
		"/usr/bin/mutual": {"-rwxr-xr-x", "root/root"},
		"/lib/systemd/system/mutual-server.service":                 {"-rw-r--r--", "root/root"},
		"/lib/systemd/system/mutual-agent.service":                  {"-rw-r--r--", "root/root"},
		"/lib/systemd/system/mutual-proxy-inbound@.service":         {"-rw-r--r--", "root/root"},
		"/lib/systemd/system/mutual-proxy-outbound@.service":        {"-rw-r--r--", "root/root"},
		"/usr/lib/sysusers.d/mutual.conf":                           {"-rw-r--r--", "root/root"},
		"/etc/mutual":                                               {"drwxr-x---", "root/root"},
		"/etc/mutual/server.yaml":                                   {"-rw-r-----", "root/root"},
		"/etc/mutual/agent.yaml":                                    {"-rw-r-----", "root/root"},
		"/var/lib/mutual":                                           {"drwxr-x---", "root/root"},
		"/usr/share/man/man1/mutual.1.gz":                           {"-rw-r--r--", "root/root"},
		"/usr/share/man/man1/mutual-server.1.gz":                    {"-rw-r--r--", "root/root"},
		"/usr/share/man/man1/mutual-proxy-inbound.1.gz":             {"-rw-r--r--", "root/root"},
		"/usr/share/bash-completion/completions/mutual":             {"-rw-r--r--", "root/root"},
		"/usr/share/zsh/vendor-completions/_mutual":                 {"-rw-r--r--", "root/root"},
		"/usr/share/fish/vendor_completions.d/mutual.fish":          {"-rw-r--r--", "root/root"},
		"/usr/share/doc/mutual/LICENSE":                             {"-rw-r--r--", "root/root"},
		"/usr/share/doc/mutual/copyright":                           {"-rw-r--r--", "root/root"},
		"/usr/share/doc/mutual/examples/proxy-inbound-example.yaml": {"-rw-r--r--", "root/root"},
	}
	for path, w := range want {
		if got, ok := files[path]; !ok {
			t.Errorf("%s is not in the package", path)
		} else if got != w {
			t.Errorf("%s: %s %s, want %s %s", path, got.mode, got.owner, w.mode, w.owner)
		}
	}
	ctrl := t.TempDir()
	sh(t, "dpkg-deb", "-e", deb, ctrl)
	cf, err := os.ReadFile(filepath.Join(ctrl, "conffiles"))
	if err != nil || !strings.Contains(string(cf), "/etc/mutual/server.yaml") || !strings.Contains(string(cf), "/etc/mutual/agent.yaml") {
		t.Errorf("conffiles %q (%v): the config files must survive upgrades", cf, err)
	}
	if fields := sh(t, "dpkg-deb", "-f", deb, "Package", "Version"); !strings.Contains(fields, "Package: mutual") || !strings.Contains(fields, "Version: 0.0.0~test") {
		t.Errorf("control fields:\n%s", fields)
	}

	root := t.TempDir()
	sh(t, "dpkg-deb", "-x", deb, root)
	if v := sh(t, filepath.Join(root, "usr/bin/mutual"), "version"); !strings.Contains(v, "version:     0.0.0~test\n") ||
		!regexp.MustCompile(`build date:  \d{4}-\d\d-\d\dT`).MatchString(v) {
		t.Errorf("the packaged binary does not say which build it is:\n%s", v)
	}
	verifyUnits(t, filepath.Join(root, "lib/systemd/system"), filepath.Join(root, "usr/bin/mutual"))

	if os.Getenv("CI") != "" || os.Getenv("MUTUAL_TEST_DPKG_INSTALL") == "1" {
		installAndPurge(t, deb)
	} else {
		t.Log("dpkg -i not tried outside CI (set MUTUAL_TEST_DPKG_INSTALL=1 to install and purge on this machine)")
	}
}

// verifyUnits runs systemd-analyze verify on the units in dir, with the
// templates instantiated; any message is a failure (unknown keys are only
// warnings to systemd). binary stands in for /usr/bin/mutual when the
// package is not installed.
func verifyUnits(t *testing.T, dir, binary string) {
	t.Helper()
	work := t.TempDir()
	var units []string
	for _, name := range []string{"mutual-server.service", "mutual-agent.service", "mutual-proxy-inbound@.service", "mutual-proxy-outbound@.service"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(b), "/usr/bin/mutual", binary)
		name = strings.Replace(name, "@.", "@test.", 1)
		if err := os.WriteFile(filepath.Join(work, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, filepath.Join(work, name))
	}
	cmd := exec.Command("systemd-analyze", append([]string{"verify", "--man=no"}, units...)...)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// installAndPurge installs the package on this machine, checks the user,
// owners and modes postinst sets and the installed binary, then purges it
// and checks that nothing of it is left but the state directory.
func installAndPurge(t *testing.T, deb string) {
	need(t, "dpkg", "stat", "getent")
	if exec.Command("dpkg", "-s", "mutual").Run() == nil {
		t.Fatal("a mutual package is already installed on this machine; not replacing it")
	}
	sh(t, "dpkg", "-i", deb)
	purged := false
	t.Cleanup(func() {
		if !purged {
			exec.Command("dpkg", "--purge", "mutual").Run()
		}
	})
	if out := sh(t, "getent", "passwd", "mutual"); !strings.Contains(out, ":/var/lib/mutual:") {
		t.Errorf("mutual user: %q", out)
	}
	for path, want := range map[string]string{
		"/etc/mutual":             "750 root mutual",
		"/etc/mutual/server.yaml": "640 root mutual",
		"/var/lib/mutual":         "750 mutual mutual",
		"/usr/bin/mutual":         "755 root root",
	} {
		if got := strings.TrimSpace(sh(t, "stat", "-c", "%a %U %G", path)); got != want {
			t.Errorf("%s: %s, want %s", path, got, want)
		}
	}
	if v := sh(t, "/usr/bin/mutual", "version"); !strings.Contains(v, "0.0.0~test") {
		t.Errorf("installed mutual version:\n%s", v)
	}
	out, err := exec.Command("systemd-analyze", "verify", "--man=no",
		"mutual-server.service", "mutual-agent.service", "mutual-proxy-inbound@test.service", "mutual-proxy-outbound@test.service").CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("systemd-analyze verify of the installed units: %v\n%s", err, out)
	}
	sh(t, "dpkg", "--purge", "mutual")
	purged = true
	for _, gone := range []string{"/usr/bin/mutual", "/lib/systemd/system/mutual-server.service", "/etc/mutual"} {
		if _, err := os.Stat(gone); err == nil {
			t.Errorf("%s is still there after dpkg --purge", gone)
		}
	}
}
