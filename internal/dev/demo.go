package dev

import (
	"context"
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

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/agent"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/server"
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

// startDemo runs a node agent, registers the demo services on it, starts
// the service and both proxies (which take their identities from the agent
// over the Workload API), and makes one allowed and one refused call. The
// intruder enrolls with a join token: it is not a workload of this node.
func startDemo(ctx context.Context, svc *server.Service, admin spiffeid.ID, dir string, log *slog.Logger, out io.Writer) (*Demo, error) {
	td := svc.Authority.Policy.TrustDomain.Name()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// The node and its agent.
	nodeTok, _, err := svc.Authority.CreateToken(ctx, admin, ca.TokenRequest{ID: "spiffe://" + td + "/node/dev"})
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "agent.sock")
	if len(sock) > 100 {
		sock = filepath.Join(os.TempDir(), fmt.Sprintf("mutual-dev-%d.sock", os.Getpid()))
	}
	ag, err := agent.New(ctx, agent.Config{StateDir: filepath.Join(dir, "agent"), Token: nodeTok, Socket: sock, SyncInterval: time.Second, Log: log.With("component", "agent")})
	if err != nil {
		return nil, fmt.Errorf("demo agent: %w", err)
	}
	context.AfterFunc(ctx, func() { ag.Close() })
	// Both demo services are this process: they are told apart by nothing
	// but their entries' IDs, so each proxy asks for its own ID by hint.
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
			return nil, fmt.Errorf("demo entry %s: %w", name, err)
		}
	}
	go ag.Run(ctx)
	api, err := workloadSource(ctx, sock, "spiffe://"+td+"/demo/api")
	if err != nil {
		return nil, err
	}
	web, err := workloadSource(ctx, sock, "spiffe://"+td+"/demo/web")
	if err != nil {
		return nil, err
	}
	intruder, err := enrollDir(ctx, svc, admin, dir, "spiffe://"+td+"/demo/intruder", log)
	if err != nil {
		return nil, err
	}

	// The service: plaintext HTTP on loopback, greeting its caller by the
	// identity the proxy vouches for.
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go (&http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller := "an anonymous caller"
		for _, part := range strings.Split(r.Header.Get(proxy.XFCCHeader), ";") {
			if v, ok := strings.CutPrefix(part, "URI="); ok {
				caller = v
			}
		}
		fmt.Fprintf(w, "hello %s, this is the api service\n", caller)
	})}).Serve(backend)
	context.AfterFunc(ctx, func() { backend.Close() })

	allowWeb, _ := authz.FromPatterns([]string{"spiffe://" + td + "/demo/web"})
	in, err := proxy.NewInbound(proxy.InboundConfig{
		Target: backend.Addr().String(), SVID: api, Bundle: api, Policy: proxy.StaticPolicy{P: allowWeb},
		Protocol: proxy.HTTP, Log: log.With("proxy", "demo-api"),
	})
	if err != nil {
		return nil, err
	}
	inLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go in.Serve(ctx, inLn)

	expectAPI, _ := authz.ParsePattern("spiffe://" + td + "/demo/api")
	outb, err := proxy.NewOutbound(proxy.OutboundConfig{
		Target: inLn.Addr().String(), Expect: []authz.Pattern{expectAPI}, SVID: web, Bundle: web,
		Log: log.With("proxy", "demo-web-outbound"),
	})
	if err != nil {
		return nil, err
	}
	outLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go outb.Serve(ctx, outLn)

	d := &Demo{APIProxy: inLn.Addr().String(), WebOutbound: outLn.Addr().String(), Dir: dir, Socket: sock}
	fmt.Fprintf(out, "Demo: a node agent serves the Workload API on unix://%s; api and web take their identities from it.\n", sock)
	fmt.Fprintf(out, "Service api is behind an inbound proxy on %s that allows only spiffe://%s/demo/web:\n", d.APIProxy, td)

	// 1. web calls api through its outbound proxy, in plaintext on loopback.
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get("http://" + d.WebOutbound + "/")
	if err != nil {
		d.Allowed = "failed: " + err.Error()
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		d.Allowed = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	fmt.Fprintf(out, "  web      -> api: %s\n", d.Allowed)

	// 2. intruder calls api directly over mTLS: verified, then refused.
	cfg, err := tlsconfig.ClientConfig(intruder, intruder, tlsconfig.AuthorizeAny(), "localhost")
	if err != nil {
		return nil, err
	}
	ic := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
	resp, err = ic.Get("https://" + d.APIProxy + "/")
	if err != nil {
		d.Refused = "failed: " + err.Error()
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		d.Refused = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	ic.CloseIdleConnections()
	fmt.Fprintf(out, "  intruder -> api: %s\n\n", d.Refused)
	return d, nil
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
func workloadSource(ctx context.Context, sock, id string) (*workloadapi.X509Source, error) {
	want := spiffeid.RequireFromString(id)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
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
	context.AfterFunc(ctx, func() { src.Close() })
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
func enrollDir(ctx context.Context, svc *server.Service, admin spiffeid.ID, dir, id string, log *slog.Logger) (*identity.DirSource, error) {
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
	go renewLoop(ctx, d, log)
	src, err := identity.NewDirSource(d)
	if err != nil {
		return nil, err
	}
	go src.Run(ctx, time.Second, nil)
	return src, nil
}
