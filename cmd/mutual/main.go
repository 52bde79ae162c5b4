// Command mutual is an on-premise zero-trust platform built on mutual TLS:
// a certificate authority for SPIFFE identities and the tools around it.
// Run `mutual --help` for the commands.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/mutual-tls/mutual/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mutual: "+cli.OneLine(err))
		os.Exit(1)
	}
}
