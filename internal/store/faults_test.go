package store_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// needRoot skips outside CI when the test needs root (mount), and fails
// under CI, which runs as root.
func needRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s needs root; CI runs as root", why)
	}
	t.Skipf("%s needs root: run as root (CI does)", why)
}

// TestHealthFailsWhenDiskFull fills the file system under a SQLite store:
// Health must report that the store cannot write (a real write probe), not
// answer OK because a read still works; and recover once space is back.
func TestHealthFailsWhenDiskFull(t *testing.T) {
	needRoot(t, "mounting a small tmpfs")
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mount tmpfs: %v: %s", err, out)
		}
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	db, err := store.Open(ctx, "sqlite:"+filepath.Join(dir, "mutual.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Health(ctx); err != nil {
		t.Fatalf("health of a fresh store: %v", err)
	}
	// Fill the disk.
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{64 << 10, 512, 1} {
		chunk := make([]byte, n)
		for {
			if _, err := f.Write(chunk); err != nil {
				break
			}
		}
	}
	f.Close()
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("ping (a read) with the disk full: %v; the read path still works, the test expects the write probe to tell", err)
	}
	// A probe's answer is reused for a second: wait for a fresh one.
	testwait.Eventually(t, func() bool {
		err := db.Health(ctx)
		if err != nil {
			t.Logf("health with the disk full: %v", err)
		}
		return err != nil
	}, "health to fail with the disk full (it must do a real write)")
	os.Remove(filler)
	testwait.EventuallyNil(t, func() error { return db.Health(ctx) }, "health to recover after space was freed")
}

// TestSQLiteMustExist: once a CA has issued, a missing or empty file is
// refused (ErrDamaged) and not created; without the option it is created.
func TestSQLiteMustExist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mutual.db")
	_, err := store.OpenWith(ctx, "sqlite:"+path, store.Options{MustExist: true})
	if !errors.Is(err, store.ErrDamaged) || !strings.Contains(err.Error(), "restore") {
		t.Errorf("missing file: %v; want ErrDamaged saying to restore", err)
	}
	if _, err := os.Stat(path); err == nil {
		t.Errorf("the refused open created %s", path)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := store.OpenWith(ctx, "sqlite:"+path, store.Options{MustExist: true}); !errors.Is(err, store.ErrDamaged) {
		t.Errorf("empty file: %v; want ErrDamaged", err)
	}
	db, err := store.Open(ctx, "sqlite:"+path)
	if err != nil {
		t.Fatalf("first start: %v", err)
	}
	db.Close()
	db, err = store.OpenWith(ctx, "sqlite:"+path, store.Options{MustExist: true})
	if err != nil {
		t.Fatalf("existing store: %v", err)
	}
	db.Close()
}

// TestSQLiteReplacedUnderStore replaces the file under an open store (a
// restore over a running CA, another CA's file moved in): the store says
// so and refuses to commit an issuance that would land in the old file.
func TestSQLiteReplacedUnderStore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mutual.db")
	db, err := store.Open(ctx, "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	if err := db.RecordIssuance(ctx, cert("01", now), "", now); err != nil {
		t.Fatal(err)
	}
	other, err := store.Open(ctx, "sqlite:"+filepath.Join(dir, "other.db"))
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	if err := os.Rename(filepath.Join(dir, "other.db"), path); err != nil {
		t.Fatal(err)
	}
	if err := db.Health(ctx); !errors.Is(err, store.ErrDamaged) || !strings.Contains(err.Error(), "replaced") {
		t.Errorf("health with the file replaced: %v; want ErrDamaged saying it was replaced", err)
	}
	if err := db.RecordIssuance(ctx, cert("02", now), "", now); !errors.Is(err, store.ErrDamaged) {
		t.Errorf("issuance with the file replaced: %v; want ErrDamaged", err)
	}
}

// TestListCertificatesCursor pages through certificates that share one
// issue time: every one once, none skipped.
func TestListCertificatesCursor(t *testing.T) {
	db, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "mutual.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	for i := range 7 {
		c := cert(fmt.Sprintf("%02x", i+1), now.Add(time.Duration(i/3)*time.Second))
		if err := db.RecordIssuance(ctx, c, "", now); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	f := store.CertificateFilter{Limit: 2}
	for pages := 0; ; pages++ {
		cs, err := db.ListCertificates(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if seen[c.Serial] {
				t.Errorf("serial %s listed twice", c.Serial)
			}
			seen[c.Serial] = true
		}
		if len(cs) < f.Limit {
			break
		}
		next, err := store.ParseCursor(cs[len(cs)-1].Cursor().String())
		if err != nil {
			t.Fatal(err)
		}
		f.After = next
	}
	if len(seen) != 7 {
		t.Errorf("paged through %d certificates, want 7", len(seen))
	}
}
