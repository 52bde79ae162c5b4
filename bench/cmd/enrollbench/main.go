// Command enrollbench measures certificate issuance through the HTTPS API
// of mutual (SQLite, and PostgreSQL with 1, 2, 3 replicas) and of step-ca
// side by side, in one run on one machine, and prints the table of issue
// #22: rates, ratios to step-ca, latency at concurrency 1, and the CPU time
// each issuance costs (which, unlike the rates, does not depend on what
// else the machine runs).
//
// Join tokens (step-ca: JWK provisioner one-time tokens) and CSRs are made
// before the clock starts; every client holds one keep-alive HTTPS
// connection, opened before the clock too.
//
//	bench/issuance.sh                     # builds mutual, finds step-ca, runs this
//	go run ./bench/cmd/enrollbench -h     # every flag
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mutual-tls/mutual/internal/procfs"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := runBench(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "enrollbench: "+err.Error())
		os.Exit(1)
	}
}

type options struct {
	mutual, stepCA string
	n1, n64, nPG   int
	replicas       []int
	keep           bool
	pgstat         bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	var replicas string
	f := flag.NewFlagSet("enrollbench", flag.ContinueOnError)
	f.SetOutput(stderr)
	f.StringVar(&o.mutual, "mutual", "", "the mutual binary (required; bench/issuance.sh builds it)")
	f.StringVar(&o.stepCA, "step-ca", "", "the step-ca binary (bench/README.md says how to build it); empty: mutual alone")
	f.IntVar(&o.n1, "n1", 1000, "issuances measured at concurrency 1 (0: not measured)")
	f.IntVar(&o.n64, "n64", 8000, "issuances measured at concurrency 64 (0: not measured)")
	f.IntVar(&o.nPG, "npg", 8000, "issuances measured on PostgreSQL, per replica count, at concurrency 64")
	f.StringVar(&replicas, "replicas", "1,2,3", "PostgreSQL replica counts to measure (one database, fsync on); empty: none")
	f.BoolVar(&o.keep, "keep", false, "keep the work directory (CA directories, logs)")
	f.BoolVar(&o.pgstat, "pgstat", false, "after each PostgreSQL run, print where the database's time went: statements (pg_stat_statements) and CPU by process")
	if err := f.Parse(args); err != nil {
		return o, err
	}
	if o.mutual == "" {
		return o, errors.New("-mutual PATH is required: go build -o /tmp/mutual ./cmd/mutual")
	}
	for _, s := range strings.Split(replicas, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return o, fmt.Errorf("-replicas %q: want counts such as 1,2,3", replicas)
		}
		o.replicas = append(o.replicas, n)
	}
	return o, nil
}

// row is one measured configuration.
type row struct {
	name string
	res  result
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "enrollbench-*")
	if err != nil {
		return err
	}
	os.Chmod(work, 0o755) // PostgreSQL's own user works under it
	if o.keep {
		fmt.Fprintln(stderr, "work directory:", work)
	} else {
		defer os.RemoveAll(work)
	}
	logs, err := os.Create(work + "/servers.log")
	if err != nil {
		return err
	}
	defer logs.Close()
	loadStart := procfs.LoadAverage()
	say := func(format string, a ...any) { fmt.Fprintf(stderr, format+"\n", a...) }

	// CSRs: P-256 keys, made once. mutual's carry no names (the token
	// names the identity); step-ca's carry the token's subject.
	mutualCSRs, err := makeCSRs(256, "")
	if err != nil {
		return err
	}
	stepCSRs, err := makeCSRs(256, stepSubject)
	if err != nil {
		return err
	}
	var rows []row
	measure := func(name string, t *target, path string, bodies [][]byte, conc int) error {
		say("%s: %d issuances at concurrency %d", name, len(bodies)-conc, conc)
		r, err := run(ctx, t, path, bodies, conc)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		rows = append(rows, row{name, r})
		say("  %.0f/s, p99 %s, CA CPU %s/issuance", r.rate(), r.p99.Round(10*time.Microsecond), r.cpuPerIssuance().Round(time.Microsecond))
		return nil
	}

	var step *stepCA
	if o.stepCA != "" {
		if step, err = startStepCA(ctx, o.stepCA, work, logs); err != nil {
			return err
		}
		defer step.stop()
	}
	m, err := startMutual(ctx, o.mutual, work, "sqlite", "", 1, logs)
	if err != nil {
		return err
	}
	defer m.stop()
	for _, conc := range []int{1, 64} {
		n := o.n1
		if conc == 64 {
			n = o.n64
		}
		if n == 0 {
			continue
		}
		// step-ca first, then mutual, at each concurrency: neither
		// always runs on a machine warmed (or loaded) by the other.
		if step != nil {
			bodies, err := step.signBodies(n+conc, stepCSRs)
			if err != nil {
				return err
			}
			if err := measure(fmt.Sprintf("step-ca c=%d", conc), step.target(), "/1.0/sign", bodies, conc); err != nil {
				return err
			}
		}
		bodies, err := m.enrollBodies(ctx, fmt.Sprintf("c%d", conc), n+conc, mutualCSRs)
		if err != nil {
			return err
		}
		if err := measure(fmt.Sprintf("mutual sqlite c=%d", conc), m.target("mutual", 0), "/v1/enroll", bodies, conc); err != nil {
			return err
		}
	}
	m.stop()
	if step != nil {
		step.stop()
	}

	if len(o.replicas) > 0 {
		pg, err := startPostgres(ctx, work, o.pgstat)
		if err != nil {
			return err
		}
		defer pg.stop()
		for _, n := range o.replicas {
			dbURL, err := pg.newDatabase(ctx)
			if err != nil {
				return err
			}
			c, err := startMutual(ctx, o.mutual, work, fmt.Sprintf("pg%d", n), dbURL, n, logs)
			if err != nil {
				return err
			}
			bodies, err := c.enrollBodies(ctx, "pg", o.nPG+64, mutualCSRs)
			var st *pgStats
			if err == nil && o.pgstat {
				st, err = startPGStats(ctx, dbURL, pg.pid)
			}
			if err == nil {
				err = measure(fmt.Sprintf("mutual postgres %d replica(s) c=64", n), c.target("mutual", pg.pid), "/v1/enroll", bodies, 64)
			}
			if err == nil && st != nil {
				err = st.report(ctx, stderr, len(bodies))
			}
			c.stop()
			if err != nil {
				return err
			}
		}
	}
	printTable(stdout, rows, loadStart, procfs.LoadAverage())
	return nil
}

// makeCSRs makes n PEM CSRs of fresh P-256 keys, with cn (and the same DNS
// name) when not empty.
func makeCSRs(n int, cn string) ([]string, error) {
	out := make([]string, n)
	for i := range out {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tpl := &x509.CertificateRequest{}
		if cn != "" {
			tpl.Subject, tpl.DNSNames = pkix.Name{CommonName: cn}, []string{cn}
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, tpl, k)
		if err != nil {
			return nil, err
		}
		out[i] = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}
	return out, nil
}

func httpClient(roots *x509.CertPool) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}, Timeout: 10 * time.Second}
}

// printTable prints issue #22's table, then every run's figures.
func printTable(w io.Writer, rows []row, loadStart, loadEnd string) {
	get := func(name string) (result, bool) {
		for _, r := range rows {
			if r.name == name {
				return r.res, true
			}
		}
		return result{}, false
	}
	rate := func(name string) string {
		if r, ok := get(name); ok {
			return fmt.Sprintf("%.0f/s", r.rate())
		}
		return "-"
	}
	ratio := func(a, b string) string {
		ra, oka := get(a)
		rb, okb := get(b)
		if !oka || !okb {
			return "-"
		}
		return fmt.Sprintf("%.2fx", ra.rate()/rb.rate())
	}
	p99 := func(name string) string {
		if r, ok := get(name); ok {
			return fmt.Sprintf("%.2f ms", float64(r.p99)/float64(time.Millisecond))
		}
		return "-"
	}
	fmt.Fprintf(w, "load average: %s at the start, %s at the end (2-core goal figures assume a quiet machine)\n\n", loadStart, loadEnd)
	fmt.Fprintln(w, "| figure | mutual | step-ca | mutual / step-ca | goal |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- |")
	fmt.Fprintf(w, "| enroll through the HTTPS API, SQLite, c=64 | %s | %s | %s | >= 3x |\n",
		rate("mutual sqlite c=64"), rate("step-ca c=64"), ratio("mutual sqlite c=64", "step-ca c=64"))
	fmt.Fprintf(w, "| enroll, c=1 | %s | %s | %s | >= 2x |\n",
		rate("mutual sqlite c=1"), rate("step-ca c=1"), ratio("mutual sqlite c=1", "step-ca c=1"))
	fmt.Fprintf(w, "| enroll, c=1, p99 | %s | %s | | < 2 ms |\n", p99("mutual sqlite c=1"), p99("step-ca c=1"))
	var pg []string
	for _, r := range rows {
		if strings.HasPrefix(r.name, "mutual postgres") {
			pg = append(pg, fmt.Sprintf("%s %.0f/s", strings.Fields(r.name)[2], r.res.rate()))
		}
	}
	if len(pg) > 0 {
		fmt.Fprintf(w, "| PostgreSQL (fsync on), replicas: rate, c=64 | %s | | | >= 2,500/s with 3, growing |\n", strings.Join(pg, ", "))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| run | issuances | certs/s | p50 | p99 | CA CPU per issuance (database included) | of it PostgreSQL | load client CPU per issuance |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- | --- |")
	ms := func(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }
	for _, r := range rows {
		db := "-"
		if r.res.dbCPU > 0 {
			db = ms(r.res.dbCPU / time.Duration(r.res.n))
		}
		fmt.Fprintf(w, "| %s | %d | %.0f | %s | %s | %s | %s | %s |\n", r.name, r.res.n, r.res.rate(),
			ms(r.res.p50), ms(r.res.p99), ms(r.res.cpuPerIssuance()), db, ms(r.res.loadPerIssuance()))
	}
}
