package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// rotationWorkload is the identity the proxy and its client both get from
// the agent (one entry, both processes run as the test's user).
const rotationWorkload = "spiffe://example.org/ns/rot/web"

// rotationRig is a CA service, a node agent, an inbound proxy (its identity
// from the agent's Workload API) in front of a plaintext service, and a
// go-spiffe client of the agent sending traffic through the proxy.
type rotationRig struct {
	caDir, passFile, admin, listen string
	srv                            *caServer
	src                            *workloadapi.X509Source
	proxyAddr                      string
	// written is the identity directory the agent keeps current (--write).
	written string
}

// newRotationRig starts everything with 20-second certificates (nodes and
// workloads), so that a rotation reaches every holder within seconds.
func newRotationRig(t *testing.T) *rotationRig {
	t.Helper()
	r := &rotationRig{listen: freeAddr(t)}
	r.caDir, r.passFile = initCA(t, "example.org")
	r.admin = filepath.Join(r.caDir, "admin")
	cfgPath := filepath.Join(r.caDir, "ca.json")
	var cfg map[string]any
	if err := json.Unmarshal(readFile(t, cfgPath), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["policy"].(map[string]any)["max_cert_ttl"] = "20s"
	cfg["policy"].(map[string]any)["default_cert_ttl"] = "20s"
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	r.srv = startServer(t, r.caDir, r.passFile, serverOptions{listen: r.listen})

	node := createToken(t, r.srv, r.admin, "spiffe://example.org/node/n1", "--cert-ttl", "20s")
	mustMutual(t, "entry", "create", "--server", r.srv.url, "--identity-dir", r.admin, "--id", rotationWorkload,
		"--node", "spiffe://example.org/node/n1", "--selector", fmt.Sprintf("unix:uid:%d", os.Getuid()), "--ttl", "20s")
	tmp := t.TempDir()
	sock := "unix://" + filepath.Join(tmp, "agent.sock")
	r.written = filepath.Join(tmp, "web")
	agent := exec.Command(mutualBin, "agent", "--dir", filepath.Join(tmp, "agent"), "--token", node, "--socket", sock, "--sync-interval", "1s",
		"--write", rotationWorkload+"="+r.written)
	agent.Env = cmdEnv()
	ap := startProc(t, agent)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent stderr:\n%s\nCA service stderr:\n%s", ap.stderr, r.srv.stderr)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), safetyNet)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(sock)))
	if err != nil {
		t.Fatalf("go-spiffe client of the agent: %v; agent stderr:\n%s", err, ap.stderr)
	}
	t.Cleanup(func() { src.Close() })
	r.src = src

	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(backend.Close)
	r.proxyAddr = freeAddr(t)
	proxy := exec.Command(mutualBin, "proxy", "inbound", "--workload-api", sock, "--listen", r.proxyAddr,
		"--target", backend.Listener.Addr().String(), "--protocol", "http", "--allow", rotationWorkload, "--ca", r.srv.url)
	proxy.Env = cmdEnv()
	pp := startProc(t, proxy)
	testnet.WaitListening(t, r.proxyAddr, func() string { return pp.stderr.String() })
	return r
}

// restart stops the CA service, runs the ca subcommand args, and starts
// the service again at the same address: holders' renewals fail meanwhile
// and are retried.
func (r *rotationRig) restart(t *testing.T, args ...string) {
	t.Helper()
	r.srv.stop(t)
	mustMutual(t, append(append([]string{"ca"}, args...), "--dir", r.caDir, "--passphrase-file", r.passFile)...)
	r.srv = startServer(t, r.caDir, r.passFile, serverOptions{listen: r.listen})
}

// traffic is requests through the proxy: each on a new connection (a new
// handshake both ways), and others on one long-lived keep-alive connection.
type traffic struct {
	mu       sync.Mutex
	ok       int
	reused   int // keep-alive requests on a connection opened earlier
	keptOpen int // connections the keep-alive client opened
	failures []error
	// proxyLeaves and clientLeaves are the certificates seen on each side
	// of the handshakes, by serial.
	proxyLeaves, clientLeaves map[string]*x509.Certificate
	stop                      chan struct{}
	wg                        sync.WaitGroup
}

func (r *rotationRig) startTraffic(t *testing.T) *traffic {
	tr := &traffic{proxyLeaves: map[string]*x509.Certificate{}, clientLeaves: map[string]*x509.Certificate{}, stop: make(chan struct{})}
	cfg := tlsconfig.MTLSClientConfig(r.src, r.src, tlsconfig.AuthorizeID(spiffeid.RequireFromString(rotationWorkload)))
	getCert := cfg.GetClientCertificate
	cfg.GetClientCertificate = func(i *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		c, err := getCert(i)
		if err == nil && c.Leaf != nil {
			tr.mu.Lock()
			tr.clientLeaves[c.Leaf.SerialNumber.String()] = c.Leaf
			tr.mu.Unlock()
		} else if err == nil {
			if leaf, perr := x509.ParseCertificate(c.Certificate[0]); perr == nil {
				tr.mu.Lock()
				tr.clientLeaves[leaf.SerialNumber.String()] = leaf
				tr.mu.Unlock()
			}
		}
		return c, err
	}
	fresh := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg.Clone(), DisableKeepAlives: true}, Timeout: 10 * time.Second}
	kept := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg.Clone(), MaxConnsPerHost: 1, IdleConnTimeout: time.Hour}, Timeout: 10 * time.Second}
	url := "https://" + r.proxyAddr + "/"
	loop := func(c *http.Client, keepAlive bool) {
		defer tr.wg.Done()
		tick := time.NewTicker(25 * time.Millisecond) // a steady request rate, not a wait for a condition
		defer tick.Stop()
		for {
			select {
			case <-tr.stop:
				return
			case <-tick.C:
			}
			reused := false
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			resp, err := c.Do(req)
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || string(body) != "ok" {
					err = fmt.Errorf("answer %s %q", resp.Status, body)
				}
			}
			tr.mu.Lock()
			if err != nil {
				tr.failures = append(tr.failures, fmt.Errorf("%s: %w", time.Now().Format(time.TimeOnly), err))
			} else {
				tr.ok++
				if reused {
					tr.reused++
				} else if keepAlive {
					tr.keptOpen++
				}
				leaf := resp.TLS.PeerCertificates[0]
				tr.proxyLeaves[leaf.SerialNumber.String()] = leaf
			}
			tr.mu.Unlock()
		}
	}
	tr.wg.Add(2)
	go loop(fresh, false)
	go loop(kept, true)
	t.Cleanup(tr.end)
	return tr
}

// end stops the traffic.
func (tr *traffic) end() {
	select {
	case <-tr.stop:
	default:
		close(tr.stop)
	}
	tr.wg.Wait()
}

// check fails t if a request failed.
func (tr *traffic) check(t *testing.T, when string) {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.failures) > 0 {
		t.Fatalf("%s: %d of %d requests through the proxy failed, first: %v", when, len(tr.failures), len(tr.failures)+tr.ok, tr.failures[0])
	}
}

// signedBy says whether both sides of the handshakes have presented a
// certificate of inter, and returns one of each.
func (tr *traffic) signedBy(inter *x509.Certificate) (proxyLeaf, clientLeaf *x509.Certificate) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	pick := func(m map[string]*x509.Certificate) *x509.Certificate {
		for _, c := range m {
			if bytes.Equal(c.AuthorityKeyId, inter.SubjectKeyId) && c.CheckSignatureFrom(inter) == nil {
				return c
			}
		}
		return nil
	}
	return pick(tr.proxyLeaves), pick(tr.clientLeaves)
}

// waitSignedBy waits until both sides present certificates of inter.
func (tr *traffic) waitSignedBy(t *testing.T, inter *x509.Certificate, what string) (proxyLeaf, clientLeaf *x509.Certificate) {
	t.Helper()
	testwait.Eventually(t, func() bool {
		proxyLeaf, clientLeaf = tr.signedBy(inter)
		return proxyLeaf != nil && clientLeaf != nil
	}, "the proxy and its client to present certificates of "+what)
	return proxyLeaf, clientLeaf
}

// read reads the certificates of name in the CA directory.
func (r *rotationRig) read(t *testing.T, name string) []*x509.Certificate {
	t.Helper()
	certs, err := pki.ReadCertificates(filepath.Join(r.caDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

func (r *rotationRig) intermediate(t *testing.T) *x509.Certificate {
	return r.read(t, pki.IntermediateCertFile)[0]
}

// waitBundles waits until the go-spiffe client's bundle and the bundle.pem
// of the directory the agent writes hold the roots of the CA directory's
// bundle, no more, no fewer.
func (r *rotationRig) waitBundles(t *testing.T, what string) {
	t.Helper()
	want := r.read(t, pki.BundleFile)
	same := func(got []*x509.Certificate) bool {
		return len(got) == len(want) && !slices.ContainsFunc(want, func(c *x509.Certificate) bool { return !slices.ContainsFunc(got, c.Equal) })
	}
	testwait.Eventually(t, func() bool {
		b, err := r.src.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("example.org"))
		written, werr := pki.ReadCertificates(filepath.Join(r.written, "bundle.pem"))
		return err == nil && werr == nil && same(b.X509Authorities()) && same(written)
	}, what)
}

// checkRevocationAnswers fetches the CRL leaf names and asks OCSP about it:
// both must answer, signed by issuer's key.
func (r *rotationRig) checkRevocationAnswers(t *testing.T, leaf, issuer *x509.Certificate) {
	t.Helper()
	hc := httpClient(t, filepath.Join(r.caDir, pki.BundleFile), nil)
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(leaf.CRLDistributionPoints[0])
	if err != nil {
		t.Fatal(err)
	}
	der, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	crl, err := x509.ParseRevocationList(der)
	if err != nil || crl.CheckSignatureFrom(issuer) != nil {
		t.Fatalf("the CRL of %q at %s: %s, %v", issuer.Subject.CommonName, leaf.CRLDistributionPoints[0], resp.Status, err)
	}
	req, err := ocsp.CreateRequest(leaf, issuer, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err = hc.Post(leaf.OCSPServer[0], "application/ocsp-request", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	der, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if o, err := ocsp.ParseResponseForCert(der, leaf, issuer); err != nil || o.Status != ocsp.Good {
		t.Fatalf("OCSP about a certificate of %q: %v (status %v)", issuer.Subject.CommonName, err, o)
	}
}

// verifyUnder checks leaf with crypto/x509 under roots alone, with every
// intermediate of the CA directory (current, retired, cross-signed).
func (r *rotationRig) verifyUnder(t *testing.T, leaf *x509.Certificate, inters []*x509.Certificate, roots ...*x509.Certificate) {
	t.Helper()
	rp, ip := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range roots {
		rp.AddCert(c)
	}
	for _, c := range inters {
		ip.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: rp, Intermediates: ip, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("certificate %s does not verify: %v", leaf.Subject, err)
	}
}

// TestE2ERotationUnderTraffic rotates the intermediate, then the root,
// while a go-spiffe client sends requests through a proxy (each on a new
// mTLS handshake, and on one long-lived connection), both identities
// served by an agent: no request fails; during the intermediate overlap
// certificates of both intermediates verify and the old one's CRL and OCSP
// answer; across the root rotation the agent, the proxy and the client
// pick up each bundle change on their own, down to the old root's
// withdrawal.
func TestE2ERotationUnderTraffic(t *testing.T) {
	r := newRotationRig(t)
	tr := r.startTraffic(t)
	first := r.intermediate(t)
	oldProxy, oldClient := tr.waitSignedBy(t, first, "the first intermediate")

	// Intermediate rotation.
	r.restart(t, "rotate-intermediate")
	second := r.intermediate(t)
	newProxy, newClient := tr.waitSignedBy(t, second, "the rotated intermediate")
	tr.check(t, "intermediate rotation")
	bundle := r.read(t, pki.BundleFile)
	for _, c := range []*x509.Certificate{oldProxy, oldClient, newProxy, newClient} {
		r.verifyUnder(t, c, []*x509.Certificate{first, second}, bundle...)
	}
	r.checkRevocationAnswers(t, oldProxy, first)
	r.checkRevocationAnswers(t, newProxy, second)

	// Root rotation: introduce the new root, then move issuance to an
	// intermediate it signs (cross-signed by the old root).
	oldRoot := bundle[0]
	r.restart(t, "rotate-root")
	r.waitBundles(t, "the client's and the written bundle to hold both roots")
	r.restart(t, "rotate-intermediate")
	third := r.intermediate(t)
	overlapProxy, _ := tr.waitSignedBy(t, third, "the new root's intermediate")
	tr.check(t, "root rotation (overlap)")
	cross := r.read(t, pki.CrossSignedFile)
	newRoot := r.read(t, pki.RootCertFile)[0]
	r.verifyUnder(t, overlapProxy, []*x509.Certificate{third, cross[0]}, oldRoot)
	r.verifyUnder(t, overlapProxy, []*x509.Certificate{third, cross[0]}, newRoot)

	// Withdraw the old root once what its intermediates issued has expired
	// (max_cert_ttl after the intermediate rotation).
	// The service keeps running meanwhile: a long outage would only grow the
	// agent's retry backoff.
	testwait.EventuallyNil(t, func() error {
		_, err := pki.CheckWithdrawRoots(r.caDir, time.Now())
		return err
	}, "the old root's withdrawal to be allowed")
	r.restart(t, "withdraw-root")
	r.waitBundles(t, "the client's and the written bundle to hold only the new root")
	// Certificates issued from now on carry no cross-signed intermediate:
	// the proxy and its client accept each other under the new root alone.
	seen := tr.okCount()
	testwait.Eventually(t, func() bool { return tr.okCount() >= seen+40 }, "traffic after the withdrawal")
	tr.end()
	tr.check(t, "root withdrawal")
	if tr.reused == 0 || tr.keptOpen != 1 {
		t.Fatalf("the keep-alive client opened %d connections (%d requests reused one), want one connection living through every rotation", tr.keptOpen, tr.reused)
	}
}

func (tr *traffic) okCount() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.ok
}
