// Command testworkload is a workload used only by the agent's tests: it asks
// the Workload API at -socket for its X.509-SVIDs with an unmodified go-spiffe
// v2 client and prints what it got on one line, "id=SPIFFE_ID[,SPIFFE_ID...]"
// (exit 0) or "error=MESSAGE" (exit 1). The tests run it as other users and
// from other paths to check attestation.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// variant is set with -ldflags "-X main.variant=..." to build binaries that
// differ only in their hash.
var variant = "a"

func main() {
	socket := flag.String("socket", "", "Workload API socket path")
	timeout := flag.Duration("timeout", 10*time.Second, "how long to wait for an answer")
	sleep := flag.Duration("sleep", 0, "only sleep this long (what a victim binary does when an attacker executes it)")
	attack := flag.String("attack", "", "attack mode (see attack.go): fork-exec, write-exec, ping-exec, child")
	victim := flag.String("victim", "", "the binary the attacker executes")
	swap := flag.String("swap", "", "swap symbolic links to -target into this directory, forever (the --write owner attack)")
	target := flag.String("target", "", "what the swapped links point to")
	flag.Parse()
	if *swap != "" {
		runSwapper(*swap, *target)
		return
	}
	if *sleep > 0 {
		time.Sleep(*sleep)
		return
	}
	if *attack != "" {
		runAttack(*attack, *socket, *victim, *timeout)
		return
	}
	fmt.Fprintf(os.Stderr, "testworkload variant %s pid %d uid %d\n", variant, os.Getpid(), os.Getuid())
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	svids, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr("unix://"+*socket))
	if err != nil {
		fmt.Printf("error=%s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(1)
	}
	ids := make([]string, 0, len(svids))
	for _, s := range svids {
		ids = append(ids, s.ID.String())
	}
	fmt.Printf("id=%s\n", strings.Join(ids, ","))
}
