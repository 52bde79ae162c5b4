package revocation

import (
	"crypto/x509"
	"encoding/hex"
	"time"
)

// Event is one revocation on the push feed (one JSON line).
type Event struct {
	Seq       int64     `json:"seq"`
	Serial    string    `json:"serial,omitempty"`
	SPIFFEID  string    `json:"spiffe_id,omitempty"`
	NodeID    string    `json:"node_id,omitempty"`
	Reason    int       `json:"reason,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	// NotAfter is when the revoked certificate expires anyway.
	NotAfter time.Time `json:"not_after,omitzero"`
	// Heartbeat lines carry only the latest seq; they let clients notice a
	// dead connection.
	Heartbeat bool `json:"heartbeat,omitempty"`
}

// The push feed as both of its ends speak it.
const (
	// FeedPath is the feed's path on the CA's API; ?since=SEQ resumes
	// after the event numbered SEQ.
	FeedPath = "/v1/revocations"
	// SeqHeader, on the feed and on the CA's CRL, carries the newest
	// revocation seq that the answer covers.
	SeqHeader = "X-Mutual-Revocation-Seq"
	// HeartbeatInterval is how often the feed sends a heartbeat line when
	// it has nothing else to say.
	HeartbeatInterval = 15 * time.Second
)

// CRLValidity is how long a CA's CRL is valid (its nextUpdate); the CA
// rebuilds it at half of that, and at once when a revocation happens.
const CRLValidity = 10 * time.Minute

// IssuerKeyID names the issuing CA in URLs: the hex SubjectKeyId of its
// certificate.
func IssuerKeyID(c *x509.Certificate) string { return hex.EncodeToString(c.SubjectKeyId) }

// crlPath is where a CA serves the CRL of issuer, below its base URL.
func crlPath(issuer *x509.Certificate) string { return "/crl/" + IssuerKeyID(issuer) + ".crl" }
