package dev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/sync/errgroup"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/agent"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/tlsconfig"
)

// Demo is the running demonstration: a service "api" behind an inbound
// proxy that allows only spiffe://TD/demo/web, and "web"'s outbound proxy.
type Demo struct {
	// APIProxy is the inbound proxy's address (mTLS, HTTP).
	APIProxy string
	// WebOutbound is the outbound proxy a plaintext client of "web" uses.
	WebOutbound string
	// Dir holds the agent's state and the intruder's identity.
	Dir string
	// Socket is the agent's Workload API socket.
	Socket string
	// Allowed and Refused are the outcomes of the two demo calls.
	Allowed, Refused string
}

// parts runs the demo's long-lived parts under the errgroup of dev's Run:
// each stops when ctx is done, and Run waits for all of them. A part that
// fails is logged; the service and the other parts run on.
type parts struct {
	ctx context.Context
	g   *errgroup.Group
	log *slog.Logger
}

func (p *parts) run(name string, f func(context.Context) error) {
	p.g.Go(func() error {
		if err := f(p.ctx); err != nil && p.ctx.Err() == nil {
			p.log.Warn("demo part stopped", "part", name, "error", err.Error())
		}
		return nil
	})
}

// closeAtEnd calls c once ctx is done.
func (p *parts) closeAtEnd(name string, c func() error) {
	p.run(name, func(ctx context.Context) error { <-ctx.Done(); return c() })
}

// demoLimits are the demo proxies' limits: a Ctrl-C waits a second at most
// for connections still open.
var demoLimits = proxy.Limits{DrainTimeout: time.Second}

// startDemo runs a node agent, registers the demo services on it, starts
// the service and both proxies (which take their identities from the agent
// over the Workload API), and makes one allowed and one refused call. The
// intruder enrolls with a join token: it is not a workload of this node.
func startDemo(p *parts, svc *caservice.Service, admin spiffeid.ID, dir string, out io.Writer) (*Demo, error) {
	td := svc.Authority.Policy.TrustDomain.Name()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	sock, err := startAgent(p, svc, admin, dir)
	if err != nil {
		return nil, err
	}
	api, err := workloadSource(p, sock, "spiffe://"+td+"/demo/api")
	if err != nil {
		return nil, err
	}
	web, err := workloadSource(p, sock, "spiffe://"+td+"/demo/web")
	if err != nil {
		return nil, err
	}
	intruder, err := enrollDir(p, svc, admin, dir, "spiffe://"+td+"/demo/intruder")
	if err != nil {
		return nil, err
	}
	backend, err := startBackend(p)
	if err != nil {
		return nil, err
	}
	apiProxy, err := startInbound(p, td, backend, api)
	if err != nil {
		return nil, err
	}
	webOutbound, err := startOutbound(p, td, apiProxy, web)
	if err != nil {
		return nil, err
	}
	d := &Demo{APIProxy: apiProxy, WebOutbound: webOutbound, Dir: dir, Socket: sock}
	fmt.Fprintf(out, "Demo: a node agent serves the Workload API on unix://%s; api and web take their identities from it.\n", sock)
	fmt.Fprintf(out, "Service api is behind an inbound proxy on %s that allows only spiffe://%s/demo/web:\n", d.APIProxy, td)

	// 1. web calls api through its outbound proxy, in plaintext on loopback.
	d.Allowed = call(&http.Client{Timeout: 10 * time.Second}, "http://"+d.WebOutbound+"/")
	fmt.Fprintf(out, "  web      -> api: %s\n", d.Allowed)

	// 2. intruder calls api directly over mTLS: verified, then refused.
	cfg, err := tlsconfig.ClientConfig(intruder, intruder, tlsconfig.AuthorizeAny(), "localhost")
	if err != nil {
		return nil, err
	}
	ic := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
	d.Refused = call(ic, "https://"+d.APIProxy+"/")
	fmt.Fprintf(out, "  intruder -> api: %s\n\n", d.Refused)
	return d, nil
}

// startAgent enrolls the demo node, registers api and web as its
// workloads, and runs its agent; it returns the Workload API socket.
func startAgent(p *parts, svc *caservice.Service, admin spiffeid.ID, dir string) (string, error) {
	td := svc.Authority.Policy.TrustDomain.Name()
	nodeTok, _, err := svc.Authority.CreateToken(p.ctx, admin, ca.TokenRequest{ID: "spiffe://" + td + "/node/dev"})
	if err != nil {
		return "", err
	}
	sock := filepath.Join(dir, "agent.sock")
	if len(sock) > 100 {
		sock = filepath.Join(os.TempDir(), fmt.Sprintf("mutual-dev-%d.sock", os.Getpid()))
	}
	ag, err := agent.New(p.ctx, agent.Config{StateDir: filepath.Join(dir, "agent"), Token: nodeTok, Socket: sock, SyncInterval: time.Second, Log: p.log.With("component", "agent")})
	if err != nil {
		return "", fmt.Errorf("demo agent: %w", err)
	}
	if err := registerDemo(p.ctx, svc, admin, td); err != nil {
		ag.Close()
		return "", err
	}
	p.run("agent", func(ctx context.Context) error {
		defer ag.Close()
		return ag.Run(ctx)
	})
	return sock, nil
}

// registerDemo creates the entries of api and web on the demo node. Both
// demo services are this process: they are told apart by nothing but their
// entries' IDs, so each proxy asks for its own ID by hint.
func registerDemo(ctx context.Context, svc *caservice.Service, admin spiffeid.ID, td string) error {
	exe, _ := os.Executable()
	sels := []string{fmt.Sprintf("unix:uid:%d", os.Getuid())}
	if exe != "" {
		sels = append(sels, "unix:path:"+exe)
	}
	for _, name := range []string{"api", "web"} {
		req := ca.EntryRequest{ID: "spiffe://" + td + "/demo/" + name, Nodes: []string{"spiffe://" + td + "/node/dev"}, Selectors: sels}
		if name == "api" {
			req.DNSNames = []string{"localhost"}
		}
		if _, err := svc.Authority.CreateEntry(ctx, admin, req); err != nil {
			return fmt.Errorf("demo entry %s: %w", name, err)
		}
	}
	return nil
}

// startBackend runs the demo service: plaintext HTTP on loopback, greeting
// its caller by the identity the proxy vouches for. It returns its address.
func startBackend(p *parts) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	hs := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller := "an anonymous caller"
		for _, part := range strings.Split(r.Header.Get(proxy.XFCCHeader), ";") {
			if v, ok := strings.CutPrefix(part, "URI="); ok {
				caller = v
			}
		}
		fmt.Fprintf(w, "hello %s, this is the api service\n", caller)
	})}
	p.run("api service", func(context.Context) error {
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	p.closeAtEnd("api service", hs.Close)
	return ln.Addr().String(), nil
}

// startInbound puts an inbound proxy allowing only demo/web in front of
// backend; it returns the proxy's address.
func startInbound(p *parts, td, backend string, api *workloadapi.X509Source) (string, error) {
	allowWeb, _ := authz.FromPatterns([]string{"spiffe://" + td + "/demo/web"})
	in, err := proxy.NewInbound(proxy.InboundConfig{
		Target: backend, SVID: api, Bundle: api, Policy: proxy.StaticPolicy{P: allowWeb},
		Protocol: proxy.HTTP, Limits: demoLimits, Log: p.log.With("proxy", "demo-api"),
	})
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	p.run("inbound proxy", func(ctx context.Context) error { return in.Serve(ctx, ln) })
	return ln.Addr().String(), nil
}

// startOutbound runs web's outbound proxy to the api proxy at target,
// expecting demo/api; it returns the proxy's address.
func startOutbound(p *parts, td, target string, web *workloadapi.X509Source) (string, error) {
	expectAPI, _ := authz.ParsePattern("spiffe://" + td + "/demo/api")
	outb, err := proxy.NewOutbound(proxy.OutboundConfig{
		Target: target, Expect: []authz.Pattern{expectAPI}, SVID: web, Bundle: web,
		Limits: demoLimits, Log: p.log.With("proxy", "demo-web-outbound"),
	})
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	p.run("outbound proxy", func(ctx context.Context) error { return outb.Serve(ctx, ln) })
	return ln.Addr().String(), nil
}

// call GETs url and says what came back: "STATUS BODY" or "failed: why".
// It leaves no connection open behind it.
func call(c *http.Client, url string) string {
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		return "failed: " + err.Error()
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
}

// renewLoop renews the identity in dir at half its lifetime, with retries,
// as the agent does for real workloads.
func renewLoop(ctx context.Context, dir string, log *slog.Logger) {
	for {
		id, err := identity.Load(dir)
		if err != nil {
			return
		}
		issued, life := pki.Lifetime(id.Leaf())
		wait := time.Until(issued.Add(life / 2))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		urls, _ := client.LoadCAURLs(dir)
		next, err := client.RenewIdentity(ctx, id, urls, "", 0)
		if err != nil {
			log.Warn("demo renewal failed; retrying", "dir", dir, "error", err.Error())
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Second):
			}
			continue
		}
		if err := next.Save(dir); err != nil {
			log.Warn("demo renewal: save", "dir", dir, "error", err.Error())
		}
	}
}

// workloadSource connects to the agent as a go-spiffe client would, picking
// the SVID with the given ID.
func workloadSource(p *parts, sock, id string) (*workloadapi.X509Source, error) {
	want := spiffeid.RequireFromString(id)
	wctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(wctx,
		workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+sock)),
		workloadapi.WithDefaultX509SVIDPicker(func(svids []*x509svid.SVID) *x509svid.SVID {
			for _, s := range svids {
				if s.ID == want {
					return s
				}
			}
			return svids[0]
		}))
	if err != nil {
		return nil, fmt.Errorf("demo: identity %s from the agent: %w", id, err)
	}
	p.closeAtEnd("workload API source", src.Close)
	// Wait until the agent holds this identity (entries sync every second).
	for {
		if s, err := src.GetX509SVID(); err == nil && s.ID == want {
			return src, nil
		}
		select {
		case <-wctx.Done():
			return nil, fmt.Errorf("demo: the agent never served %s", id)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// enrollDir enrolls id with a join token into DIR/<last segment>, renewed in
// the background, and follows it.
func enrollDir(p *parts, svc *caservice.Service, admin spiffeid.ID, dir, id string) (*identity.DirSource, error) {
	ctx := p.ctx
	tok, _, err := svc.Authority.CreateToken(ctx, admin, ca.TokenRequest{ID: id})
	if err != nil {
		return nil, err
	}
	enr, err := client.RequestIdentity(ctx, tok, pki.KeyECDSAP256, 0)
	if err != nil {
		return nil, fmt.Errorf("enroll %s: %w", id, err)
	}
	d := filepath.Join(dir, filepath.Base(id))
	if err := identity.WriteDir(d, enr.Identity, identity.WriteOptions{CAURLs: enr.CAURLs}); err != nil {
		return nil, err
	}
	src, err := identity.NewDirSource(d)
	if err != nil {
		return nil, err
	}
	p.run("renewal of "+d, func(ctx context.Context) error { renewLoop(ctx, d, p.log); return nil })
	p.run("following "+d, func(ctx context.Context) error { return src.Run(ctx, time.Second, nil) })
	return src, nil
}
