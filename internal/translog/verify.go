package translog

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// NewClient makes a client of the log served at base (https://ca:8443 or
// http://ca:8080) whose checkpoints verifierKey signs. An https base is
// trusted by roots, or by the system roots when roots is nil: what it
// serves is checked against the signed checkpoints either way.
func NewClient(base string, roots *x509.CertPool, verifierKey string) *Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}}
	return &Client{Base: base, VerifierKey: verifierKey, HTTP: &http.Client{Timeout: 30 * time.Second, Transport: tr}}
}

// ErrVerifierKeyChanged means a verifier key other than the one a state
// remembers was given: a log does not change its key.
var ErrVerifierKeyChanged = errors.New("the log's verifier key differs from the one remembered")

// UseKey settles the verifier key the state's log is checked with: key,
// or when empty the key the state remembers. A key other than the
// remembered one is ErrVerifierKeyChanged. The result is s.VerifierKey,
// "" when neither was there.
func (s *State) UseKey(key string) error {
	switch {
	case key == "":
		return nil
	case s.VerifierKey != "" && key != s.VerifierKey:
		return ErrVerifierKeyChanged
	}
	s.VerifierKey = key
	return nil
}

// Verification is what Verify established. Its JSON form is the output of
// `mutual log verify --json` (fields in that output's order).
type Verification struct {
	// CertificateIndex is the certificate's entry, when one was proven.
	CertificateIndex *int64 `json:"certificate_index,omitempty"`
	// ConsistentWith is the size of the checkpoint seen before, when
	// there was one; the new checkpoint extends it.
	ConsistentWith *int64 `json:"consistent_with,omitempty"`
	// RequestedBy is who asked for the certificate, when one was proven.
	RequestedBy string `json:"requested_by,omitempty"`
	// RootHash is the checkpoint's tree hash, in hex.
	RootHash string `json:"root_hash"`
	// TreeSize is the checkpoint's number of entries.
	TreeSize int64 `json:"tree_size"`
}

// Verify fetches the log's latest checkpoint, checks that it extends the
// one the state remembers (ErrRollback or ErrFork when not), and, when
// cert is not nil, that cert is in it (ProveCertificate). On success the
// state remembers the new checkpoint; saving it is the caller's.
func Verify(ctx context.Context, c *Client, st *State, cert *x509.Certificate) (*Verification, error) {
	cp, err := c.Checkpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	v := &Verification{TreeSize: cp.Size, RootHash: fmt.Sprintf("%x", cp.Hash[:])}
	if st.Checkpoint != "" {
		old, err := OpenCheckpoint([]byte(st.Checkpoint), c.VerifierKey)
		if err != nil {
			return nil, fmt.Errorf("the checkpoint remembered in the state file (--state): %w", err)
		}
		if err := c.CheckConsistency(ctx, old, cp); err != nil {
			return nil, fmt.Errorf("consistency with the checkpoint seen before (%d entries): %w", old.Size, err)
		}
		v.ConsistentWith = &old.Size
	}
	if cert != nil {
		idx, entry, err := c.ProveCertificate(ctx, cp, cert)
		if err != nil {
			return nil, err
		}
		v.CertificateIndex, v.RequestedBy = &idx, entry.RequestedBy.String()
	}
	st.Checkpoint = string(cp.Note)
	return v, nil
}
