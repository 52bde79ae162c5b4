package seal_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/seal"
)

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestConstantMemory seals and unseals 256 MiB through a pipe: what the
// process allocates in all stays a few chunks, whatever the size.
func TestConstantMemory(t *testing.T) {
	const size = 256 << 20
	k := newLocalKEK(t)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(seal.Seal(context.Background(), pw, io.LimitReader(zeros{}, size), webPolicy, k))
	}()
	r, _, err := seal.Open(context.Background(), pr, k)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, r)
	if err != nil || n != size {
		t.Fatalf("unsealed %d bytes, %v", n, err)
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Fatalf("sealing and unsealing %d MiB allocated %d MiB: memory grows with the size", size>>20, alloc>>20)
	}
}

const benchSize = 64 << 20

func BenchmarkSeal(b *testing.B) {
	k := newLocalKEK(b)
	b.SetBytes(benchSize)
	for b.Loop() {
		if err := seal.Seal(context.Background(), io.Discard, io.LimitReader(zeros{}, benchSize), webPolicy, k); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnseal(b *testing.B) {
	k := newLocalKEK(b)
	var sealed bytes.Buffer
	if err := seal.Seal(context.Background(), &sealed, io.LimitReader(zeros{}, benchSize), webPolicy, k); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchSize)
	for b.Loop() {
		if err := seal.Unseal(context.Background(), io.Discard, bytes.NewReader(sealed.Bytes()), k); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVersusAge seals and unseals the same file as the Debian `age`
// binary encrypts and decrypts it, in the same run, and reports MB/s of
// both and their ratio (>1: mutual is faster). Set MUTUAL_SEAL_BENCH_MB
// for another size (1024 for the 1 GiB of issue 18); peak-rss-MB is this
// process's peak resident memory (age runs in its own process).
func BenchmarkVersusAge(b *testing.B) {
	agePath, err := exec.LookPath("age")
	if err != nil {
		b.Skip("age is not installed (apt-get install age)")
	}
	mb := 64
	if s := os.Getenv("MUTUAL_SEAL_BENCH_MB"); s != "" {
		if _, err := fmt.Sscan(s, &mb); err != nil {
			b.Fatal(err)
		}
	}
	dir := b.TempDir()
	plain := filepath.Join(dir, "plain")
	writeFile(b, plain, io.LimitReader(zeros{}, int64(mb)<<20))
	identity := filepath.Join(dir, "age.key")
	if out, err := exec.Command("age-keygen", "-o", identity).CombinedOutput(); err != nil {
		b.Fatalf("age-keygen: %v %s", err, out)
	}
	k := newLocalKEK(b)
	size := float64(mb) * (1 << 20) / 1e6
	var sealT, unsealT, ageEncT, ageDecT time.Duration
	b.ResetTimer()
	for b.Loop() {
		sealed, ageFile := filepath.Join(dir, "sealed"), filepath.Join(dir, "age")
		sealT += timed(func() { sealFile(b, k, plain, sealed) })
		unsealT += timed(func() { unsealFile(b, k, sealed) })
		ageEncT += timed(func() { run(b, agePath, "-e", "-i", identity, "-o", ageFile, plain) })
		ageDecT += timed(func() { run(b, agePath, "-d", "-i", identity, "-o", os.DevNull, ageFile) })
	}
	n := float64(b.N)
	mbps := func(d time.Duration) float64 { return size * n / d.Seconds() }
	b.ReportMetric(mbps(sealT), "seal-MB/s")
	b.ReportMetric(mbps(unsealT), "unseal-MB/s")
	b.ReportMetric(mbps(ageEncT), "age-enc-MB/s")
	b.ReportMetric(mbps(ageDecT), "age-dec-MB/s")
	b.ReportMetric(ageEncT.Seconds()/sealT.Seconds(), "seal/age-ratio")
	b.ReportMetric(ageDecT.Seconds()/unsealT.Seconds(), "unseal/age-ratio")
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	b.ReportMetric(float64(ru.Maxrss)/1024, "peak-rss-MB")
}

func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

func writeFile(b *testing.B, path string, r io.Reader) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, r); err != nil {
		b.Fatal(err)
	}
}

func sealFile(b *testing.B, k *localKEK, in, out string) {
	src, err := os.Open(in)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(out)
	if err != nil {
		b.Fatal(err)
	}
	defer dst.Close()
	if err := seal.Seal(context.Background(), dst, src, webPolicy, k); err != nil {
		b.Fatal(err)
	}
}

func unsealFile(b *testing.B, k *localKEK, in string) {
	src, err := os.Open(in)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(os.DevNull)
	if err != nil {
		b.Fatal(err)
	}
	defer dst.Close()
	if err := seal.Unseal(context.Background(), dst, src, k); err != nil {
		b.Fatal(err)
	}
}

func run(b *testing.B, name string, args ...string) {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		b.Fatalf("%s %s: %v %s", name, strings.Join(args, " "), err, out)
	}
}
