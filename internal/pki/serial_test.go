package pki_test

import (
	"math/big"

	"github.com/mutual-tls/mutual/internal/pki"
	"testing"
)

// The stored form of a serial must not change: existing databases and logs
// hold it. Lower-case hex, no leading zeros, no colons.
func TestFormatSerialIsTheStoredForm(t *testing.T) {
	n, _ := new(big.Int).SetString("0a0fff", 16)
	if got := pki.FormatSerial(n); got != "a0fff" {
		t.Fatalf("FormatSerial = %q, want a0fff", got)
	}
	for _, in := range []string{"a0fff", "0A:0F:FF", " 0x0a0fff ", "0a 0f ff"} {
		got, err := pki.ParseSerial(in)
		if err != nil || got.Cmp(n) != 0 {
			t.Errorf("ParseSerial(%q) = %v, %v; want %v", in, got, err, n)
		}
	}
	for _, in := range []string{"", "0x", "xyz", "-a0", "12:zz"} {
		if got, err := pki.ParseSerial(in); err == nil {
			t.Errorf("ParseSerial(%q) = %v, want an error", in, got)
		}
	}
}
