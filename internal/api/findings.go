package api

import "time"

// Finding is one thing the issuance log's monitor did not expect: the rule
// it broke and the evidence, the log entry (index, identity, serial) and
// the monitor's words.
type Finding struct {
	Rule     string `json:"rule"`
	LogIndex int64  `json:"log_index"`
	SPIFFEID string `json:"spiffe_id,omitempty"`
	Serial   string `json:"serial,omitempty"`
	Detail   string `json:"detail"`
	// The CA fills in the rest when it lists findings: the monitor that
	// last reported it, when, and how many times.
	ReportedBy    string    `json:"reported_by,omitempty"`
	FirstReported time.Time `json:"first_reported,omitzero"`
	LastReported  time.Time `json:"last_reported,omitzero"`
	Times         int64     `json:"times,omitempty"`
}

// FindingsReport is what a monitor sends: POST /v1/log/findings (admin).
type FindingsReport struct {
	Findings []Finding `json:"findings"`
}

// MaxFindingsPerReport bounds one FindingsReport.
const MaxFindingsPerReport = 256

// FindingList answers GET /v1/log/findings (admin): the findings reported
// most recently, latest first, and how many the CA holds in all.
type FindingList struct {
	Findings []Finding `json:"findings"`
	Total    int       `json:"total"`
}

// MigrationReport is what a proxy in permissive mode answers at GET
// /migration on its metrics listener: who still connects without a
// certificate, so that a team knows when it can switch to strict.
type MigrationReport struct {
	// Since is when the proxy started counting.
	Since                   time.Time         `json:"since"`
	WithoutCertificateTotal int64             `json:"without_certificate_total"`
	Sources                 []MigrationSource `json:"sources"`
}

// MigrationSource is one client address seen without a certificate.
type MigrationSource struct {
	Source string `json:"source"`
	// Kind is "no-certificate" (TLS without a client certificate) or
	// "plaintext" (no TLS at all).
	Kind      string    `json:"kind"`
	Count     int64     `json:"count"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}
