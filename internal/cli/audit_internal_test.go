package cli

import (
	"io"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/mutual-tls/mutual/internal/audit"
)

// TestAuditKnowsProxyFlags: `mutual audit --etc` reads a proxy's flags
// from its env file and refuses flags it does not know, so every flag of
// `mutual proxy inbound` and `outbound` must be known to it, with the
// right arity (a value flag read as a boolean, or the reverse, would
// misread the next word).
func TestAuditKnowsProxyFlags(t *testing.T) {
	e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	for _, c := range []interface{ Flags() *pflag.FlagSet }{proxyInboundCmd(e), proxyOutboundCmd(e)} {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			val := "x"
			if f.Value.Type() == "bool" {
				val = "true"
			}
			if _, err := audit.ProxyFlags([]string{"--" + f.Name + "=" + val}); err != nil {
				t.Errorf("--%s (%s): %v", f.Name, f.Value.Type(), err)
			}
			if f.Value.Type() != "bool" {
				if _, err := audit.ProxyFlags([]string{"--" + f.Name}); err == nil {
					t.Errorf("--%s takes a value, but audit reads it without one", f.Name)
				}
			}
		})
	}
}
