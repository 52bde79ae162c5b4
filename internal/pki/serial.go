package pki

import (
	"fmt"
	"math/big"
	"strings"
)

// FormatSerial is the one canonical text form of a certificate serial
// number: lower-case hex without colons, a "0x" prefix or leading zeros. It
// is the form stored in the database and the issuance log, compared against
// revocation events and printed in logs, so every site must use it.
func FormatSerial(n *big.Int) string { return fmt.Sprintf("%x", n) }

var serialSeparators = strings.NewReplacer(":", "", " ", "")

// ParseSerial reads a serial number as FormatSerial writes it, or as openssl
// or a browser prints it ("3A:0F:...", "0x3a0f...", with spaces). It refuses
// an empty, negative or non-hex value; it does not judge the size, which is
// the caller's rule.
func ParseSerial(s string) (*big.Int, error) {
	// The stored form needs no cleaning (a CRL reads thousands of them).
	if n, ok := new(big.Int).SetString(s, 16); ok && n.Sign() >= 0 {
		return n, nil
	}
	clean := strings.ToLower(serialSeparators.Replace(strings.TrimSpace(s)))
	clean = strings.TrimPrefix(clean, "0x")
	n, ok := new(big.Int).SetString(clean, 16)
	if !ok || clean == "" || n.Sign() < 0 {
		return nil, fmt.Errorf("%q is not a certificate serial number: want hex digits, colons allowed (as openssl x509 -serial prints it)", s)
	}
	return n, nil
}
