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
