package cli

import "testing"

// TestDaemonsIgnoreSIGHUP: every service command (with its flags) is a
// daemon for Main's signal handling, and interactive commands are not.
func TestDaemonsIgnoreSIGHUP(t *testing.T) {
	for _, args := range [][]string{
		{"server", "--dir", "/var/lib/mutual/ca"},
		{"agent", "--dir", "/var/lib/mutual/agent", "--socket", "unix:///run/mutual/agent.sock"},
		{"proxy", "inbound", "--listen", ":8443"},
		{"proxy", "outbound", "--listen", "127.0.0.1:15001"},
		{"log", "monitor"},
	} {
		if !isDaemon(args) {
			t.Errorf("%q is not treated as a daemon: SIGHUP would kill it", args)
		}
	}
	for _, args := range [][]string{{"dev"}, {"diagnose", "--listen", ":9443"}, {"version"}, {"proxy"}, {"bogus"}, {}} {
		if isDaemon(args) {
			t.Errorf("%q is treated as a daemon: SIGHUP would not end it with its terminal", args)
		}
	}
}
