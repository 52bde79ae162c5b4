package dashboard

import (
	"context"
	"errors"
	"time"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/store"
)

// How much of the store a page reads: the listing is newest first, paged
// by the CA.
const (
	// sparsePage is the page size asked of the CA when few rows match
	// (the revoked and expiring filters): fewer, larger pages.
	sparsePage = 5000
	// searchScanMax bounds what one certificates page filters through.
	searchScanMax = 20_000
	// rowsMax is the rows one certificates page shows.
	rowsMax = 100
)

// errStop ends a scan early; it is not a failure.
var errStop = errors.New("stop")

// scan calls fn for each certificate matching spiffeID and validOnly,
// newest first from the cursor after, in pages of pageSize, until fn
// returns errStop, max were read or the listing ends. It returns how many were read and the cursor
// to continue from: after the certificate fn stopped at, else after the
// last page read ("" at the end).
func (d *Dashboard) scan(ctx context.Context, spiffeID string, validOnly bool, after string, pageSize, max int, fn func(api.CertificateInfo) error) (read int, next string, err error) {
	next = after
	for read < max {
		n := min(pageSize, max-read)
		page, err := d.cfg.CA.CertificatesPage(ctx, spiffeID, validOnly, n, next)
		if err != nil {
			return read, next, err
		}
		next = page.Next
		for _, c := range page.Certificates {
			read++
			if err := fn(c); errors.Is(err, errStop) {
				// Continue after this one, not after the whole page.
				return read, (&store.Certificate{IssuedAt: c.IssuedAt, Serial: c.Serial}).Cursor().String(), nil
			} else if err != nil {
				return read, next, err
			}
		}
		if next == "" || len(page.Certificates) == 0 {
			return read, "", nil
		}
	}
	return read, next, nil
}

// certState says whether a certificate is valid, revoked or expired at now.
func certState(c api.CertificateInfo, now time.Time) string {
	switch {
	case c.RevokedAt != nil:
		return "revoked"
	case now.After(c.NotAfter):
		return "expired"
	case now.Before(c.NotBefore):
		return "not yet valid"
	}
	return "valid"
}
