// Package testenv starts a real CA service for tests: the CA made by
// testca, the service on 127.0.0.1 with its store (SQLite in the CA's
// directory unless told otherwise), and an admin client holding the
// operator identity `ca init` made. Everything stops at the end of the
// test.
//
// Only start knows how the service is wired; the rest of the package and
// every test using it go through CA.
package testenv

import (
	"context"
	"errors"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// stopTimeout bounds how long a stopped service may take to return.
const stopTimeout = 30 * time.Second

// Options say how StartCA runs the service. The zero value is a fresh CA
// on SQLite serving its API only, logging to a buffer shown if the test
// fails.
type Options struct {
	// CA is the CA to serve; nil makes a fresh one with testca.New. Several
	// services may serve one CA (replicas sharing a PostgreSQL store).
	CA *testca.CA
	// StoreURL is the store ("postgres://..."); empty means SQLite in the
	// CA's directory.
	StoreURL string
	// HTTP serves the CRL and OCSP over plain HTTP on loopback too, so
	// that the certificates the service issues name them (HTTPURL).
	HTTP bool
	// Metrics serves Prometheus metrics on loopback (MetricsURL).
	Metrics bool
	// FeedMaxStreams and FeedMaxStreamsPerIdentity bound the revocation
	// feed's streams; zero means the service's defaults.
	FeedMaxStreams, FeedMaxStreamsPerIdentity int
	// Log receives the service's events; nil means a debug log shown when
	// the test fails.
	Log *slog.Logger
}

// CA is a running CA service and its operator.
type CA struct {
	// CA is the CA's material: directory, root, intermediate, issuer.
	*testca.CA
	// URL is the service's API ("https://127.0.0.1:PORT"); it stays the same
	// across Stop and Start.
	URL string
	// HTTPURL is the base URL of the plain-HTTP CRL and OCSP listener
	// ("http://127.0.0.1:PORT"), when Options.HTTP is set.
	HTTPURL string
	// MetricsURL is the base URL of the metrics listener, when
	// Options.Metrics is set.
	MetricsURL string
	// AdminID is the operator identity `ca init` made; Admin is a client of
	// the service holding it.
	AdminID *identity.Identity
	Admin   *client.Client

	t       testing.TB
	opts    Options
	addr    string // the API's address, kept for a restart
	running *instance
}

// instance is one run of the service, from start to stop.
type instance struct {
	url, addr, httpAddr, metricsAddr string
	store                            *store.DB
	cancel                           context.CancelFunc
	done                             chan error
	close                            func() error
}

// StartCA runs a CA service as o says on 127.0.0.1 until the end of the
// test and returns it with an admin client.
func StartCA(t testing.TB, o Options) *CA {
	t.Helper()
	if o.CA == nil {
		o.CA = testca.New(t)
	}
	if o.Log == nil {
		o.Log, _ = testlog.New(t, "CA service")
	}
	c := &CA{CA: o.CA, t: t, opts: o, addr: "127.0.0.1:0"}
	c.Start(t)
	t.Cleanup(func() { c.Stop(t) })
	var err error
	if c.AdminID, err = identity.Load(o.CA.AdminDir); err != nil {
		t.Fatalf("testenv: the operator identity: %v", err)
	}
	tc := c.AdminID.TLSCertificate()
	if c.Admin, err = client.New([]string{c.URL}, c.AdminID.Roots, &tc); err != nil {
		t.Fatalf("testenv: admin client: %v", err)
	}
	t.Cleanup(c.Admin.CloseIdleConnections)
	return c
}

// start opens the service for the CA in o and runs it: the one function
// that knows the service's wiring API.
func start(o Options, listen, httpListen, metricsListen string) (*instance, error) {
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := caservice.Open(ctx, caservice.Options{
		Dir: o.CA.Dir, Passphrase: []byte(testca.Passphrase), Listen: listen, StoreURL: o.StoreURL,
		HTTPListen: httpListen, MetricsListen: metricsListen, Log: o.Log,
		FeedMaxStreams: o.FeedMaxStreams, FeedMaxStreamsPerIdentity: o.FeedMaxStreamsPerIdentity,
	})
	if err != nil {
		cancel()
		return nil, err
	}
	in := &instance{url: svc.URL, addr: svc.Addr().String(), store: svc.Store, cancel: cancel, done: make(chan error, 1), close: svc.Close}
	if httpListen != "" {
		in.httpAddr = svc.HTTPAddr().String()
	}
	if metricsListen != "" {
		in.metricsAddr = svc.MetricsAddr().String()
	}
	go func() { in.done <- svc.Run(ctx) }()
	return in, nil
}

// Start runs the service; after a Stop, again on the same address and
// store.
func (c *CA) Start(t testing.TB) {
	t.Helper()
	if c.running != nil {
		t.Fatal("testenv: the CA service is already running")
	}
	var httpListen, metricsListen string
	if c.opts.HTTP {
		httpListen = "127.0.0.1:0"
	}
	if c.opts.Metrics {
		metricsListen = "127.0.0.1:0"
	}
	var in *instance
	// The address may still be held by the run before for a moment.
	testwait.EventuallyNil(t, func() error {
		var err error
		in, err = start(c.opts, c.addr, httpListen, metricsListen)
		if errors.Is(err, syscall.EADDRINUSE) {
			return err
		}
		if err != nil {
			t.Fatalf("testenv: start the CA service: %v", err)
		}
		return nil
	}, "the CA service's address "+c.addr+" to be free")
	if c.URL != "" && in.url != c.URL {
		in.stop(t)
		t.Fatalf("testenv: the CA service came back at %s, not %s", in.url, c.URL)
	}
	c.running, c.URL = in, in.url
	c.addr = in.addr
	if in.httpAddr != "" {
		c.HTTPURL = "http://" + in.httpAddr
	}
	if in.metricsAddr != "" {
		c.MetricsURL = "http://" + in.metricsAddr
	}
}

// Stop shuts the service down and releases its listeners and store; Start
// runs it again. Stopping a stopped service does nothing.
func (c *CA) Stop(t testing.TB) {
	t.Helper()
	if c.running == nil {
		return
	}
	c.running.stop(t)
	c.running = nil
}

func (in *instance) stop(t testing.TB) {
	t.Helper()
	in.cancel()
	select {
	case err := <-in.done:
		if err != nil {
			t.Errorf("testenv: the CA service's Run returned an error at shutdown: %v", err)
		}
	case <-time.After(stopTimeout):
		t.Errorf("testenv: the CA service did not stop within %s", stopTimeout)
	}
	if err := in.close(); err != nil {
		t.Errorf("testenv: close the CA service: %v", err)
	}
}

// Store is the running service's store.
func (c *CA) Store(t testing.TB) *store.DB {
	t.Helper()
	if c.running == nil {
		t.Fatal("testenv: the CA service is stopped")
	}
	return c.running.store
}

// Token creates a join token for id; req may set anything else.
func (c *CA) Token(t testing.TB, id string, req api.TokenRequest) string {
	t.Helper()
	req.SPIFFEID = id
	resp, err := c.Admin.CreateToken(context.Background(), req)
	if err != nil {
		t.Fatalf("testenv: token for %s: %v", id, err)
	}
	return resp.Token
}

// Enroll obtains an identity for id with a join token, as `mutual cert
// request` does.
func (c *CA) Enroll(t testing.TB, id string, req api.TokenRequest) *identity.Identity {
	t.Helper()
	enr, err := client.RequestIdentity(context.Background(), c.Token(t, id, req), pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatalf("testenv: enroll %s: %v", id, err)
	}
	return enr.Identity
}
