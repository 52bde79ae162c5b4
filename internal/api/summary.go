package api

import "time"

// Summary is the estate at a glance: GET /v1/certificates/summary (admin).
type Summary struct {
	// At is the CA's clock when it counted.
	At time.Time `json:"at"`
	// LiveByKind counts unexpired, unrevoked certificates by identity kind
	// ("workload", "node", "operator", "CA server", ...).
	LiveByKind map[string]int `json:"live_by_kind"`
	// ExpiringHourly[i] counts live certificates expiring within i+1 hours
	// of At but not within i; ExpiringDaily the same by days over a week.
	ExpiringHourly []int `json:"expiring_hourly"`
	ExpiringDaily  []int `json:"expiring_daily"`
	// Identities are the identities holding a live certificate, by
	// SPIFFE ID.
	Identities []IdentitySummary `json:"identities"`
	// RecentRevocations are the latest revocations, latest first.
	RecentRevocations []CertificateInfo `json:"recent_revocations"`
}

// IdentitySummary is one identity's live certificates.
type IdentitySummary struct {
	SPIFFEID     string `json:"spiffe_id"`
	Kind         string `json:"kind"`
	Certificates int    `json:"certificates"`
	// Newest is the most recently issued one's serial, issue time and expiry.
	NewestSerial   string    `json:"newest_serial"`
	NewestIssuedAt time.Time `json:"newest_issued_at"`
	NewestNotAfter time.Time `json:"newest_not_after"`
}
