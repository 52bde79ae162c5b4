// Command mtlsbench measures mutual's inbound proxy on loopback against
// baselines in the same run: a bare crypto/tls server on the same
// certificates, and nginx, Caddy and HAProxy (from the system) configured
// for mutual TLS in front of the same backend. It is the harness of DESIGN.md's "Budgets";
// bench/run.sh builds it and the mutual binary and runs it.
//
//	mtlsbench run -mutual ./mutual [-server-cpus 0] [-duration 5s] ...
//
// It starts, each as its own process: a tiny Go HTTP backend; `mutual proxy
// inbound` twice in front of it (--protocol http and --protocol tcp); a bare
// Go HTTPS server requiring and verifying client certificates; and nginx,
// Caddy and HAProxy requiring client certificates, proxying to the backend. Then, as the load
// generator, it measures for each: idle memory per connection (RSS delta of
// the server process), new full handshakes per second, keep-alive requests
// per second with p50/p99 latency, and bulk upload throughput, with the
// server's CPU time per operation from /proc. It prints Markdown tables
// with ratios, and which budgets are met.
//
// The load generator competes for the same machine: pin it and the servers
// to separate CPUs (bench/run.sh runs it under taskset -c 1 and passes
// -server-cpus 0) and read the CPU-per-operation rows, which do not depend
// on who saturates first.
//
// "mtlsbench backend" and "mtlsbench bare" are the server processes the run
// starts (it re-executes itself).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mtlsbench: "+err.Error())
		os.Exit(1)
	}
}

const usage = `usage:
  mtlsbench run -mutual PATH [flags]    run the comparison (see -h)
  mtlsbench backend -listen ADDR        the plaintext HTTP backend
  mtlsbench bare -listen ADDR -identity-dir DIR
                                        the bare crypto/tls HTTPS server`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("no command\n" + usage)
	}
	switch args[0] {
	case "run":
		return runBench(ctx, args[1:], stdout, stderr)
	case "backend":
		return runBackend(ctx, args[1:], stderr)
	case "bare":
		return runBare(ctx, args[1:], stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", args[0], usage)
}
