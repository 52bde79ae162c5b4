package caservice_test

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testwait"
	"github.com/mutual-tls/mutual/internal/translog"
)

func options(c *testca.CA) caservice.Options {
	return caservice.Options{Dir: c.Dir, Passphrase: []byte(testca.Passphrase), Listen: "127.0.0.1:0"}
}

// run opens and runs a service until stop is called, which returns Run's
// error once every part has stopped, and closes the service.
func run(t testing.TB, o caservice.Options) (svc *caservice.Service, stop func() error) {
	t.Helper()
	svc, err := caservice.Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		err := <-done
		svc.Close()
		return err
	}
	t.Cleanup(func() { stop() })
	return svc, stop
}

// runLogged runs a service until its log has a signed checkpoint (of the
// certificates `ca init` made), then stops it: the CA records that
// checkpoint beside its keys as it stops.
func runLogged(t *testing.T, o caservice.Options) {
	t.Helper()
	svc, stop := run(t, o)
	testwait.EventuallyNil(t, func() error {
		cp, err := svc.Store.LatestCheckpoint(context.Background())
		if err == nil && cp.Size == 0 {
			err = errors.New("the checkpoint is empty")
		}
		return err
	}, "a checkpoint of the log")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestRunStopsEveryPart: when its context ends, Run returns only after
// every listener it served has stopped accepting.
func TestRunStopsEveryPart(t *testing.T) {
	c := testca.New(t)
	o := options(c)
	o.MetricsListen, o.HTTPListen = "127.0.0.1:0", "127.0.0.1:0"
	svc, stop := run(t, o)
	addrs := []net.Addr{svc.Addr(), svc.MetricsAddr(), svc.HTTPAddr()}
	for _, a := range addrs {
		conn, err := net.Dial("tcp", a.String())
		if err != nil {
			t.Fatalf("%s before stop: %v", a, err)
		}
		conn.Close()
	}
	if err := stop(); err != nil {
		t.Fatalf("Run = %v, want nil after a clean stop", err)
	}
	for _, a := range addrs {
		if conn, err := net.Dial("tcp", a.String()); err == nil {
			conn.Close()
			t.Errorf("%s still accepts after Run returned", a)
		}
	}
}

// TestOpenRefusesAnotherStore: once the CA has recorded its log's
// checkpoint, a store that does not hold that log (a new empty one, or
// the file deleted) is refused as damaged rather than forked.
func TestOpenRefusesAnotherStore(t *testing.T) {
	c := testca.New(t)
	runLogged(t, options(c))
	if _, err := os.Stat(filepath.Join(c.Dir, translog.CheckpointFile)); err != nil {
		t.Fatalf("no checkpoint recorded beside the keys after a run: %v", err)
	}
	o := options(c)
	o.StoreURL = "sqlite:" + filepath.Join(t.TempDir(), "other.db")
	if _, err := caservice.Open(context.Background(), o); !errors.Is(err, store.ErrDamaged) {
		t.Fatalf("Open on a new store = %v, want store.ErrDamaged", err)
	}
	if err := os.Remove(filepath.Join(c.Dir, pki.DatabaseFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := caservice.Open(context.Background(), options(c)); !errors.Is(err, store.ErrDamaged) {
		t.Fatalf("Open with the CA's store deleted = %v, want store.ErrDamaged", err)
	}
}

// TestOpenRefusesAnotherLog: a store whose log is as long as the
// checkpoint but holds other entries is refused as damaged.
func TestOpenRefusesAnotherLog(t *testing.T) {
	c, other := testca.New(t), testca.New(t)
	runLogged(t, options(c))
	runLogged(t, options(other))
	o := options(c)
	o.StoreURL = "sqlite:" + filepath.Join(other.Dir, pki.DatabaseFile)
	_, err := caservice.Open(context.Background(), o)
	if !errors.Is(err, store.ErrDamaged) {
		t.Fatalf("Open on another CA's store = %v, want store.ErrDamaged", err)
	}
}

func TestOpenRefusesBadOptions(t *testing.T) {
	c := testca.New(t)
	tests := []struct {
		name string
		edit func(*caservice.Options)
		want string
	}{
		{"no directory", func(o *caservice.Options) { o.Dir = "" }, "--dir"},
		{"negative feed bound", func(o *caservice.Options) { o.FeedMaxStreams = -1 }, "--feed-max-streams"},
		{"wrong passphrase", func(o *caservice.Options) { o.Passphrase = []byte("nope") }, filepath.Join("intermediate", "key.pem")},
		{"listen address taken", nil, "--listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := options(c)
			if tt.edit != nil {
				tt.edit(&o)
			} else {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				o.Listen = ln.Addr().String()
			}
			_, err := caservice.Open(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open = %v, want an error naming %s", err, tt.want)
			}
		})
	}
	if _, err := caservice.Open(context.Background(), caservice.Options{Dir: c.Dir, Passphrase: []byte("nope"), Listen: "127.0.0.1:0"}); !errors.Is(err, pki.ErrWrongPassphrase) {
		t.Errorf("wrong passphrase: %v, want pki.ErrWrongPassphrase", err)
	}
}

// TestLeavesOperatorsAdminURLsAlone: the first start records the CA's
// address for the admin identity; a later start with another --url (a
// replica, a restart on another address) leaves the operator's file as it is.
func TestLeavesOperatorsAdminURLsAlone(t *testing.T) {
	c := testca.New(t)
	svc, err := caservice.Open(context.Background(), options(c))
	if err != nil {
		t.Fatal(err)
	}
	url := svc.URL
	svc.Close()
	first, err := client.LoadCAURLs(c.AdminDir)
	if err != nil || !slices.Equal(first, []string{url}) {
		t.Fatalf("first start recorded %v (%v), want [%s]", first, err, url)
	}
	// The operator points the file at their load balancer.
	lb := []string{"https://ca.example.internal:8443"}
	if err := client.SaveCAURLs(c.AdminDir, lb); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(filepath.Join(c.AdminDir, client.ServersFile))
	if err != nil {
		t.Fatal(err)
	}
	o := options(c)
	o.URLs = []string{"https://127.0.0.1:1/"}
	svc, err = caservice.Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	svc.Close()
	after, err := os.ReadFile(filepath.Join(c.AdminDir, client.ServersFile))
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Fatalf("a start with another --url rewrote %s:\n%s\nwas:\n%s", client.ServersFile, after, before)
	}
}

// TestIssueAdmin: an operator identity issued offline is recorded in the
// CA's store (so it authenticates and can be revoked) and in its log.
func TestIssueAdmin(t *testing.T) {
	c := testca.New(t)
	ctx := context.Background()
	id, err := caservice.IssueAdmin(ctx, c.Dir, []byte(testca.Passphrase), "", "bob", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if id.ID.String() != "spiffe://example.org/admin/bob" {
		t.Errorf("issued %s", id.ID)
	}
	if _, err := pki.VerifyChain(id.Chain, id.Roots, time.Now(), x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("chain: %v", err)
	}
	db, err := store.Open(ctx, "sqlite:"+filepath.Join(c.Dir, pki.DatabaseFile))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rec, err := db.GetCertificate(ctx, pki.FormatSerial(id.Leaf().SerialNumber))
	if err != nil || rec.RequestedBy != translog.CARequester("admin").String() {
		t.Errorf("stored %+v (%v), want it recorded as requested by the CA's admin command", rec.RequestedBy, err)
	}
	if _, err := caservice.IssueAdmin(ctx, c.Dir, []byte(testca.Passphrase), "", "bob/../x", time.Hour); err == nil || !strings.Contains(err.Error(), "--name") {
		t.Errorf("a bad name: %v, want an error naming --name", err)
	}
}
