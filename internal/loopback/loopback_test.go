package loopback_test

import (
	"fmt"
	"testing"

	"github.com/mutual-tls/mutual/internal/loopback"
)

func TestIs(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8080":                true,
		"127.1.2.3:1":                   true,
		"[::1]:443":                     true,
		"localhost:80":                  true,
		"localhost":                     true, // a Host header without a port
		"127.0.0.1":                     true,
		"[::1]":                         true,
		"::1":                           true,
		"0.0.0.0:80":                    false, // every interface
		":8080":                         false, // every interface
		"[::]:80":                       false,
		"10.0.0.1:80":                   false,
		"example.org:80":                false,
		"localhost.attacker.example:80": false, // DNS rebinding
		"127.0.0.1.nip.io:80":           false,
		"":                              false,
		"[::1":                          false,
	} {
		if got := loopback.Is(addr); got != want {
			t.Errorf("Is(%q) = %v, want %v", addr, got, want)
		}
	}
}

func ExampleIs() {
	fmt.Println(loopback.Is("127.0.0.1:8443"), loopback.Is("0.0.0.0:8443"), loopback.Is("localhost"))
	// Output: true false true
}
