package dashboard

import (
	"errors"
	"net/http"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/pki"
)

// identitiesData lists the identities alive now, the registration entries
// and the join tokens (never their secrets: the CA does not answer them).
type identitiesData struct {
	Live       []api.IdentitySummary
	LiveErr    string
	Truncated  bool
	Entries    []api.Entry
	EntriesErr string
	Tokens     []tokenRow
	TokensErr  string
}

type tokenRow struct {
	api.TokenInfo
	State string
}

// liveIdentitiesMax bounds the identities listed.
const liveIdentitiesMax = 500

func (d *Dashboard) identities(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	now := d.cfg.Now()
	var data identitiesData
	if sum, err := d.cfg.CA.Summary(ctx); err != nil {
		data.LiveErr = err.Error()
	} else {
		data.Live = sum.Identities
	}
	data.Truncated = len(data.Live) > liveIdentitiesMax
	data.Live = data.Live[:min(len(data.Live), liveIdentitiesMax)]
	if es, err := d.cfg.CA.ListEntries(ctx); err != nil {
		data.EntriesErr = err.Error()
	} else {
		data.Entries = es.Entries
	}
	if ts, err := d.cfg.CA.ListTokens(ctx); err != nil {
		data.TokensErr = err.Error()
	} else {
		for _, t := range ts.Tokens {
			state := "unused"
			switch {
			case t.UsedAt != nil:
				state = "used"
			case now.After(t.ExpiresAt):
				state = "expired"
			}
			data.Tokens = append(data.Tokens, tokenRow{TokenInfo: t, State: state})
		}
	}
	d.render(w, r, http.StatusOK, "identities", "Identities", data)
}

// nodesData lists the nodes with a live certificate and what they are
// granted.
type nodesData struct {
	Nodes []nodeRow
	Err   string
}

type nodeRow struct {
	api.IdentitySummary
	// Entries are the registration entries that grant its workloads.
	Entries []api.Entry
}

func (d *Dashboard) nodes(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var data nodesData
	sum, err := d.cfg.CA.Summary(ctx)
	var entries []api.Entry
	es, eerr := d.cfg.CA.ListEntries(ctx)
	if eerr == nil {
		entries = es.Entries
	}
	if err = errors.Join(err, eerr); err != nil {
		data.Err = err.Error()
	}
	if sum != nil {
		for _, l := range sum.Identities {
			id, err := spiffeid.FromString(l.SPIFFEID)
			if err != nil || pki.KindOf(id) != pki.KindNode {
				continue
			}
			n := nodeRow{IdentitySummary: l}
			for _, e := range entries {
				if grants(e, id) {
					n.Entries = append(n.Entries, e)
				}
			}
			data.Nodes = append(data.Nodes, n)
		}
	}
	d.render(w, r, http.StatusOK, "nodes", "Nodes", data)
}

// grants reports whether entry e grants identities to workloads on node.
func grants(e api.Entry, node spiffeid.ID) bool {
	for _, n := range e.Nodes {
		if p, err := authz.ParsePattern(n); err == nil && p.Match(node) {
			return true
		}
	}
	return false
}
