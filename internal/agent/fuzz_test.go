package agent_test

import (
	"testing"

	"github.com/mutual-tls/mutual/internal/agent"
)

// FuzzParseWriteSpec: --write values never panic the parser, and an
// accepted one never allows a key readable by others.
func FuzzParseWriteSpec(f *testing.F) {
	f.Add("spiffe://example.org/web=/etc/web/tls,owner=www-data,mode=0640,reload=nginx -s reload")
	f.Add("spiffe://example.org/web=/d,mode=0607")
	f.Add("=/d")
	f.Fuzz(func(t *testing.T, s string) {
		w, err := agent.ParseWriteSpec(s)
		if err != nil {
			return
		}
		if w.Mode&0o037 != 0 {
			t.Fatalf("%q accepted key mode %04o", s, w.Mode)
		}
	})
}
