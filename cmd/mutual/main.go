// Command mutual is an on-premise zero-trust platform built on mutual TLS:
// a certificate authority for SPIFFE identities and the tools around it.
// Run `mutual --help` for the commands.
package main

import (
	"os"

	"github.com/mutual-tls/mutual/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
