package keyrelease_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/mutual-tls/mutual/internal/keyrelease"
	"github.com/mutual-tls/mutual/seal"
)

// BenchmarkUnwrap measures unwraps per second of the key-release service
// under concurrent mTLS clients (8 per GOMAXPROCS, each with its own
// connections), every unwrap verified, checked for revocation and policy,
// and recorded in the audit log.
func BenchmarkUnwrap(b *testing.B) {
	e := newEnv(b)
	webID := e.enroll(b, "spiffe://example.org/ns/prod/web")
	const clients = 16
	var cs []*keyrelease.Client
	for range clients {
		cs = append(cs, e.client(b, webID))
	}
	h, _, err := seal.ParseHeader(sealTo(b, cs[0], toWeb, []byte("x")))
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	b.SetParallelism(clients / 2)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := cs[int(next.Add(1)-1)%clients]
		for pb.Next() {
			if _, err := c.Unwrap(context.Background(), h); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "unwraps/s")
}
