package pki

import (
	"fmt"
	"strconv"
	"strings"
)

// Revocation reasons of RFC 5280, section 5.3.1.
var reasonNames = map[string]int{
	"unspecified":          0,
	"keyCompromise":        1,
	"cACompromise":         2,
	"affiliationChanged":   3,
	"superseded":           4,
	"cessationOfOperation": 5,
	"certificateHold":      6,
	"privilegeWithdrawn":   9,
	"aACompromise":         10,
}

// ParseRevocationReason reads an RFC 5280 revocation reason by name ("keyCompromise",
// "key-compromise" or "key_compromise", any case) or number. Empty means
// unspecified.
func ParseRevocationReason(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		for _, v := range reasonNames {
			if v == n {
				return n, nil
			}
		}
	}
	norm := strings.ToLower(strings.NewReplacer("-", "", "_", "", " ", "").Replace(s))
	for name, v := range reasonNames {
		if strings.ToLower(name) == norm {
			return v, nil
		}
	}
	return 0, fmt.Errorf("unknown revocation reason %q: use one of unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation, certificateHold, privilegeWithdrawn, aACompromise", s)
}

// RevocationReasonName returns the RFC 5280 name of a revocation reason
// code, or the number when it has none.
func RevocationReasonName(code int) string {
	for name, v := range reasonNames {
		if v == code {
			return name
		}
	}
	return strconv.Itoa(code)
}
