package dashboard

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/inspect"
	"github.com/mutual-tls/mutual/internal/pki"
)

// certificatesData is one page of a certificate search.
type certificatesData struct {
	Query, Status string
	Statuses      []string
	Rows          []certRow
	// Searched says what the query was read as.
	Searched string
	// Next continues the listing ("" at the end).
	Next string
	Err  string
}

type certRow struct {
	api.CertificateInfo
	Kind, State string
}

// rowsMax is the rows one certificates page shows.
const rowsMax = 100

// certificates lists one page of certificates: the CA filters and pages
// (GET /v1/certificates?status=), the dashboard only renders.
func (d *Dashboard) certificates(w http.ResponseWriter, r *http.Request) {
	now := d.cfg.Now()
	q := r.URL.Query()
	data := certificatesData{Query: strings.TrimSpace(q.Get("q")), Status: q.Get("status"), Statuses: api.CertificateStatuses()}
	if data.Status == "" {
		data.Status = string(api.StatusAll)
	}
	status := api.CertificateStatus(data.Status)
	if !slices.Contains(data.Statuses, data.Status) {
		d.fail(w, r, http.StatusBadRequest, "Unknown status filter; use one of "+strings.Join(data.Statuses, ", ")+".")
		return
	}
	spiffeID, searched, single, err := d.readQuery(r, data.Query)
	data.Searched = searched
	switch {
	case err != nil:
		data.Err = err.Error()
	case single != nil:
		if hasStatus(*single, status, now) {
			data.Rows = append(data.Rows, row(*single, now))
		}
	default:
		page, err := d.cfg.CA.CertificatesQuery(r.Context(), api.CertificateQuery{SPIFFEID: spiffeID, Status: status, Limit: rowsMax, After: q.Get("after")})
		if err != nil {
			data.Err = err.Error()
			break
		}
		for _, c := range page.Certificates {
			data.Rows = append(data.Rows, row(c, now))
		}
		data.Next = page.Next
	}
	d.render(w, r, http.StatusOK, "certificates", "Certificates", data)
}

// readQuery reads a search as a SPIFFE ID, a serial (looked up at once), or
// a node's name.
func (d *Dashboard) readQuery(r *http.Request, q string) (spiffeID, searched string, single *api.CertificateInfo, err error) {
	if q == "" {
		return "", "", nil, nil
	}
	if strings.HasPrefix(q, "spiffe://") {
		id, err := spiffeid.FromString(q)
		if err != nil {
			return "", "", nil, errors.New("the search is not a valid SPIFFE ID: " + err.Error())
		}
		return id.String(), "identity " + id.String(), nil, nil
	}
	if _, perr := pki.ParseSerial(q); perr == nil {
		c, err := d.cfg.CA.Certificate(r.Context(), q)
		var ae *client.APIError
		switch {
		case err == nil:
			return "", "serial " + c.Serial, c, nil
		case !errors.As(err, &ae) || ae.Status != http.StatusNotFound:
			return "", "", nil, err
		}
		// Not a serial this CA issued: perhaps a node's name.
	}
	node, err := pki.NodeID(d.cfg.Identity.ID.TrustDomain(), strings.TrimPrefix(q, "node:"))
	if err != nil {
		return "", "", nil, errors.New("the search is neither a SPIFFE ID (spiffe://...), a serial this CA issued, nor a node's name")
	}
	return node.String(), "node " + node.String(), nil, nil
}

// hasStatus says whether c is in status at now, as the CA's filter would
// (for a certificate found by its serial).
func hasStatus(c api.CertificateInfo, status api.CertificateStatus, now time.Time) bool {
	switch status {
	case api.StatusValid:
		return certState(c, now) == "valid"
	case api.StatusExpiring:
		return certState(c, now) == "valid" && c.NotAfter.Sub(now) < api.DefaultExpiringWithin
	case api.StatusRevoked:
		return c.RevokedAt != nil
	}
	return true
}

func row(c api.CertificateInfo, now time.Time) certRow {
	kind := "unknown"
	if id, err := spiffeid.FromString(c.SPIFFEID); err == nil {
		kind = pki.KindOf(id).String()
	}
	return certRow{CertificateInfo: c, Kind: kind, State: certState(c, now)}
}

// certificateData is one certificate in words.
type certificateData struct {
	certRow
	Detail *inspect.Certificate
	// Reasons are the revocation reasons offered.
	Reasons []string
	Revoked bool
	Err     string
}

// revocationReasons are the RFC 5280 reasons an operator picks from.
var revocationReasons = []string{"unspecified", "keyCompromise", "affiliationChanged", "superseded", "cessationOfOperation", "privilegeWithdrawn"}

func (d *Dashboard) certificate(w http.ResponseWriter, r *http.Request) {
	d.showCertificate(w, r, http.StatusOK, "")
}

func (d *Dashboard) showCertificate(w http.ResponseWriter, r *http.Request, status int, msg string) {
	c, err := d.cfg.CA.Certificate(r.Context(), r.PathValue("serial"))
	if err != nil {
		st := http.StatusBadGateway
		var ae *client.APIError
		if errors.As(err, &ae) && ae.Status < 500 {
			st = ae.Status
		}
		d.fail(w, r, st, "The CA could not show this certificate: "+err.Error())
		return
	}
	now := d.cfg.Now()
	data := certificateData{certRow: row(*c, now), Reasons: revocationReasons, Err: msg, Revoked: r.URL.Query().Get("revoked") == "1"}
	if certs, err := pki.ParseCertificates([]byte(c.CertificatePEM)); err == nil && len(certs) > 0 {
		data.Detail = &inspect.Describe(certs[:1], now)[0]
	}
	d.render(w, r, status, "certificate", "Certificate "+c.Serial, data)
}

// revoke revokes one certificate, after the operator confirmed it.
func (d *Dashboard) revoke(w http.ResponseWriter, r *http.Request) {
	serial := r.PathValue("serial")
	if r.PostFormValue("confirm") != "yes" {
		d.showCertificate(w, r, http.StatusBadRequest, "Not revoked: tick the confirmation box to revoke this certificate.")
		return
	}
	_, err := d.cfg.CA.Revoke(r.Context(), api.RevokeRequest{Serial: serial, Reason: r.PostFormValue("reason")})
	if err != nil {
		d.showCertificate(w, r, http.StatusBadGateway, "Not revoked: "+err.Error())
		return
	}
	d.log.Info("dashboard revoked a certificate", "serial", serial, "reason", r.PostFormValue("reason"), "by", d.cfg.Identity.ID.String(), "remote", r.RemoteAddr)
	http.Redirect(w, r, "/certificates/"+url.PathEscape(serial)+"?revoked=1", http.StatusSeeOther)
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
