package publish

import "testing"

// TestCRLSerial: the CRL reads stored serials (plain hex) directly and
// every spelling as pki.ParseSerial does, dropping what it refuses.
func TestCRLSerial(t *testing.T) {
	for s, want := range map[string]string{
		"1000000000000007": "1000000000000007",
		"3A:0F":            "3a0f",
		"0x3a0f":           "3a0f",
		"":                 "",
		"zz":               "",
		"-5":               "",
		"+5":               "5",
		"0":                "0",
		" 3a 0f ":          "3a0f",
	} {
		n, ok := crlSerial(s)
		got := ""
		if ok {
			got = n.Text(16)
		}
		if got != want {
			t.Errorf("crlSerial(%q) = %q, %v; want %q", s, got, ok, want)
		}
	}
}
