package pki_test

import (
	"testing"

	"github.com/mutual-tls/mutual/internal/pki"
)

// TestRevocationReasons: names are read in any spelling and case, or as
// numbers RFC 5280 defines, and written back by their RFC name.
func TestRevocationReasons(t *testing.T) {
	for in, want := range map[string]int{"": 0, "keyCompromise": 1, "key-compromise": 1, "KEY_COMPROMISE": 1, "4": 4, "aACompromise": 10} {
		got, err := pki.ParseRevocationReason(in)
		if err != nil || got != want {
			t.Errorf("ParseRevocationReason(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"7", "compromised", "-1"} {
		if _, err := pki.ParseRevocationReason(bad); err == nil {
			t.Errorf("ParseRevocationReason(%q) accepted a reason RFC 5280 does not define", bad)
		}
	}
	if got := pki.RevocationReasonName(1); got != "keyCompromise" {
		t.Errorf("RevocationReasonName(1) = %q", got)
	}
	if got := pki.RevocationReasonName(7); got != "7" {
		t.Errorf("RevocationReasonName(7) = %q, want the number", got)
	}
}
