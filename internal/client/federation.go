package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/mutual-tls/mutual/internal/api"
)

// AddFederation makes a federation relationship with a foreign trust
// domain (admin).
func (c *Client) AddFederation(ctx context.Context, req api.FederationRequest) (*api.Federation, error) {
	var out api.Federation
	return &out, c.do(ctx, http.MethodPost, "/v1/federations", req, &out)
}

// ListFederations lists the relationships and the bundles held (admin).
func (c *Client) ListFederations(ctx context.Context) (*api.FederationList, error) {
	var out api.FederationList
	return &out, c.do(ctx, http.MethodGet, "/v1/federations", nil, &out)
}

// RemoveFederation ends the relationship with trustDomain and drops its
// bundle (admin).
func (c *Client) RemoveFederation(ctx context.Context, trustDomain string) error {
	return c.do(ctx, http.MethodDelete, "/v1/federations/"+url.PathEscape(trustDomain), nil, nil)
}

// BundleChanges returns the federation audit trail for trustDomain, or
// ("") all of them (admin).
func (c *Client) BundleChanges(ctx context.Context, trustDomain string) (*api.BundleChangeList, error) {
	var out api.BundleChangeList
	return &out, c.do(ctx, http.MethodGet, "/v1/federations/changes?trust_domain="+url.QueryEscape(trustDomain), nil, &out)
}
