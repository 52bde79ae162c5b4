package proxy

import "time"

// SetNow replaces the report's clock, so that a test states the times it
// records instead of sleeping for them to differ.
func (r *MigrationReport) SetNow(now func() time.Time) { r.now = now }
