package dashboard

import (
	"net/http"

	"github.com/mutual-tls/mutual/internal/api"
)

// federationData lists the federated trust domains and the partnerships.
type federationData struct {
	Federations   []api.Federation
	FederationErr string
	Partners      []api.Partner
	PartnersErr   string
}

func (d *Dashboard) federation(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var data federationData
	if fs, err := d.cfg.CA.ListFederations(ctx); err != nil {
		data.FederationErr = err.Error()
	} else {
		data.Federations = fs.Federations
	}
	if ps, err := d.cfg.CA.ListPartners(ctx); err != nil {
		data.PartnersErr = err.Error()
	} else {
		data.Partners = ps.Partners
	}
	d.render(w, r, http.StatusOK, "federation", "Partners and federation", data)
}
