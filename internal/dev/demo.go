package dev

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
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
	// Dir holds the demo identities (api, web, intruder).
	Dir string
	// Allowed and Refused are the outcomes of the two demo calls.
	Allowed, Refused string
}

// startDemo enrolls three identities through the CA's API, starts the
// service and both proxies, and makes one allowed and one refused call.
func startDemo(ctx context.Context, svc *server.Service, admin spiffeid.ID, dir string, log *slog.Logger, out io.Writer) (*Demo, error) {
	td := svc.Authority.Policy.TrustDomain.Name()
	enroll := func(name string, ips []string) (*identity.DirSource, error) {
		tok, _, err := svc.Authority.CreateToken(ctx, admin, ca.TokenRequest{ID: "spiffe://" + td + "/demo/" + name, IPAddresses: ips, DNSNames: []string{"localhost"}})
		if err != nil {
			return nil, err
		}
		enr, err := client.RequestIdentity(ctx, tok, pki.KeyECDSAP256, 0)
		if err != nil {
			return nil, fmt.Errorf("enroll demo/%s: %w", name, err)
		}
		d := filepath.Join(dir, name)
		if err := enr.Identity.Save(d); err != nil {
			return nil, err
		}
		if err := client.SaveCAURLs(d, enr.CAURLs); err != nil {
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
	api, err := enroll("api", []string{"127.0.0.1"})
	if err != nil {
		return nil, err
	}
	web, err := enroll("web", nil)
	if err != nil {
		return nil, err
	}
	intruder, err := enroll("intruder", nil)
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

	d := &Demo{APIProxy: inLn.Addr().String(), WebOutbound: outLn.Addr().String(), Dir: dir}
	fmt.Fprintf(out, "Demo: service api behind an inbound proxy on %s that allows only spiffe://%s/demo/web\n", d.APIProxy, td)

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
	cfg, err := tlsconfig.ClientConfig(intruder, intruder, tlsconfig.AuthorizeAny(), "127.0.0.1")
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
		leaf := id.Leaf()
		wait := time.Until(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2))
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
