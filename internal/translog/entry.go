// Package translog is mutual's issuance transparency log: every certificate
// the CA issues is appended, in the same transaction that stores it, to an
// RFC 6962 Merkle tree (golang.org/x/mod/sumdb/tlog); signed checkpoints
// follow the C2SP signed-note checkpoint format and the tree is served as
// C2SP tlog-tiles, so that standard verifiers check it without mutual's code.
package translog

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"time"
)

// MaxEntrySize is the largest entry the log takes: C2SP entry bundles
// prefix each entry with a 16-bit length.
const MaxEntrySize = 65535

// Entry is what the log records for one certificate.
type Entry struct {
	// Version is 1.
	Version int `json:"v"`
	// Certificate is the DER certificate.
	Certificate []byte `json:"cert"`
	// RequestedBy says who asked (a JSON string: "token:ID", "renew:SERIAL",
	// "entry:ID", "ca-init", ...).
	RequestedBy Requester `json:"requested_by"`
	// Node is the node a workload certificate was obtained through.
	Node     string    `json:"node,omitempty"`
	IssuedAt time.Time `json:"issued_at"`
}

// Marshal encodes the entry as the bytes that are hashed into the tree.
func (e Entry) Marshal() []byte {
	e.Version = 1
	b, _ := json.Marshal(e)
	return b
}

// ParseEntry decodes a log entry.
func ParseEntry(b []byte) (*Entry, error) {
	var e Entry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("log entry: %w", err)
	}
	if e.Version != 1 {
		return nil, fmt.Errorf("log entry: unknown version %d", e.Version)
	}
	if len(e.Certificate) == 0 {
		return nil, fmt.Errorf("log entry: no certificate")
	}
	return &e, nil
}

// Cert parses the entry's certificate.
func (e *Entry) Cert() (*x509.Certificate, error) { return x509.ParseCertificate(e.Certificate) }
