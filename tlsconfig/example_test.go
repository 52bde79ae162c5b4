package tlsconfig_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/identity/identitytest"
	"github.com/mutual-tls/mutual/tlsconfig"
)

// newIdentityDir writes an identity for id into a directory, as `mutual cert
// request` would with a plain join token: the certificate carries the
// SPIFFE ID and dnsNames (none unless given).
func newIdentityDir(dir string, ca *identitytest.CA, id string, dnsNames ...string) string {
	idn, err := ca.Issue(id, dnsNames...)
	if err != nil {
		log.Fatal(err)
	}
	out := filepath.Join(dir, idn.ID.Path()[1:])
	if err := idn.Save(out); err != nil {
		log.Fatal(err)
	}
	return out
}

// newCA makes a throwaway CA for example.org (`mutual ca init` makes real ones).
func newCA() *identitytest.CA {
	ca, err := identitytest.NewCA("example.org")
	if err != nil {
		log.Fatal(err)
	}
	return ca
}

// A server that accepts only callers of its trust domain and a client that
// accepts only the expected server, both following identity directories.
// The server's certificate names no host: the client authenticates it by
// its chain and SPIFFE ID, whatever address it dials.
func Example() {
	dir, _ := os.MkdirTemp("", "tlsconfig-example")
	defer os.RemoveAll(dir)
	ca := newCA()
	serverSrc, err := identity.NewDirSource(newIdentityDir(dir, ca, "spiffe://example.org/ns/prod/db"))
	if err != nil {
		log.Fatal(err)
	}
	clientSrc, err := identity.NewDirSource(newIdentityDir(dir, ca, "spiffe://example.org/ns/prod/web"))
	if err != nil {
		log.Fatal(err)
	}

	td := spiffeid.RequireTrustDomainFromString("example.org")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.ServerConfig(serverSrc, serverSrc, tlsconfig.AuthorizeMemberOf(td)))
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			return
		}
		id, _ := tlsconfig.PeerID(tc.ConnectionState())
		fmt.Fprintf(c, "hello %s\n", id)
	}()

	cfg, err := tlsconfig.ClientConfig(clientSrc, clientSrc,
		tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/ns/prod/db")), "")
	if err != nil {
		log.Fatal(err)
	}
	conn, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	server, _ := tlsconfig.PeerID(conn.ConnectionState())
	fmt.Println("connected to", server)
	reply, _ := io.ReadAll(conn)
	fmt.Print(string(reply))
	// Output:
	// connected to spiffe://example.org/ns/prod/db
	// hello spiffe://example.org/ns/prod/web
}

// A client whose server is not the one it expects gets a *PeerError saying so.
func ExampleAuthorizeID() {
	dir, _ := os.MkdirTemp("", "tlsconfig-example")
	defer os.RemoveAll(dir)
	ca := newCA()
	serverSrc, _ := identity.NewDirSource(newIdentityDir(dir, ca, "spiffe://example.org/ns/dev/db"))
	clientSrc, _ := identity.NewDirSource(newIdentityDir(dir, ca, "spiffe://example.org/ns/prod/web"))
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ln, _ := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.ServerConfig(serverSrc, serverSrc, tlsconfig.AuthorizeMemberOf(td)))
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	cfg, _ := tlsconfig.ClientConfig(clientSrc, clientSrc,
		tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/ns/prod/db")), "")
	_, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	fmt.Println(err)
	// Output:
	// spiffe://example.org/ns/dev/db is not authorized: only spiffe://example.org/ns/prod/db may connect
}

// AuthorizeMatch takes the patterns mutual's proxy policies use: "*" is one
// path segment, a final "**" any depth below.
func ExampleAuthorizeMatch() {
	allow, err := tlsconfig.AuthorizeMatch("spiffe://example.org/ns/prod/*")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, id := range []string{"spiffe://example.org/ns/prod/web", "spiffe://example.org/ns/prod/web/debug", "spiffe://example.org/ns/dev/web"} {
		err := allow(spiffeid.RequireFromString(id), nil)
		fmt.Println(id, err == nil)
	}
	_, err = tlsconfig.AuthorizeMatch("spiffe://example.org/ns/pr*d")
	fmt.Println(err)
	// Output:
	// spiffe://example.org/ns/prod/web true
	// spiffe://example.org/ns/prod/web/debug false
	// spiffe://example.org/ns/dev/web false
	// tlsconfig: pattern "spiffe://example.org/ns/pr*d": segment "pr*d": use a whole segment, * or **
}

// A client that also wants a host name (as web PKI does) passes it as
// serverName: the server's certificate must then carry it besides the
// expected SPIFFE ID.
func ExampleClientConfig_serverName() {
	dir, _ := os.MkdirTemp("", "tlsconfig-example")
	defer os.RemoveAll(dir)
	ca := newCA()
	serverSrc, _ := identity.NewDirSource(newIdentityDir(dir, ca, "spiffe://example.org/ns/prod/db", "db.internal"))
	clientSrc, _ := identity.NewDirSource(newIdentityDir(dir, ca, "spiffe://example.org/ns/prod/web"))
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ln, _ := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.ServerConfig(serverSrc, serverSrc, tlsconfig.AuthorizeMemberOf(td)))
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	db := tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/ns/prod/db"))
	for _, name := range []string{"db.internal", "cache.internal"} {
		cfg, _ := tlsconfig.ClientConfig(clientSrc, clientSrc, db, name)
		conn, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		var pe *tlsconfig.PeerError
		switch {
		case err == nil:
			fmt.Println(name+":", "connected")
			conn.Close()
		case errors.As(err, &pe):
			fmt.Println(name+":", pe.Reason)
		default:
			fmt.Println(name+":", err)
		}
	}
	// Output:
	// db.internal: connected
	// cache.internal: name mismatch
}
