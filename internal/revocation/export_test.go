package revocation

import "time"

// SetCRLTicks makes a watcher that follows a CRL alone refetch it once per
// value received on ticks instead of every CRLInterval.
func SetCRLTicks(w *Watcher, ticks <-chan time.Time) { w.crlTicks = ticks }
