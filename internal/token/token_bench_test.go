package token_test

import (
	"testing"

	"github.com/mutual-tls/mutual/internal/token"
)

// BenchmarkParse is the first step of every enrollment: reading the join
// token the request carries.
//
//	go test -run XXX -bench Parse -benchmem ./internal/token
func BenchmarkParse(b *testing.B) {
	t, err := token.New(nil, []string{"https://ca.example.org:8443", "https://10.0.0.1:8443"}, [32]byte{1, 2, 3})
	if err != nil {
		b.Fatal(err)
	}
	s := t.String()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := token.Parse(s); err != nil {
			b.Fatal(err)
		}
	}
}
