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

// CreatePartner makes a partnership (admin).
func (c *Client) CreatePartner(ctx context.Context, req api.PartnerRequest) (*api.Partner, error) {
	var out api.Partner
	return &out, c.do(ctx, http.MethodPost, "/v1/partners", req, &out)
}

// ListPartners lists partnerships (admin).
func (c *Client) ListPartners(ctx context.Context) (*api.PartnerList, error) {
	var out api.PartnerList
	return &out, c.do(ctx, http.MethodGet, "/v1/partners", nil, &out)
}

// ShowPartner returns a partnership and the certificates issued under it (admin).
func (c *Client) ShowPartner(ctx context.Context, name string) (*api.PartnerDetail, error) {
	var out api.PartnerDetail
	return &out, c.do(ctx, http.MethodGet, "/v1/partners/"+url.PathEscape(name), nil, &out)
}

// PartnerToken makes a join token for an identity of the partnership name (admin).
func (c *Client) PartnerToken(ctx context.Context, name string, req api.PartnerTokenRequest) (*api.TokenResponse, error) {
	var out api.TokenResponse
	return &out, c.do(ctx, http.MethodPost, "/v1/partners/"+url.PathEscape(name)+"/tokens", req, &out)
}

// EndPartner ends the partnership name, revoking everything issued under it (admin).
func (c *Client) EndPartner(ctx context.Context, name string) (*api.RevokeResponse, error) {
	var out api.RevokeResponse
	return &out, c.do(ctx, http.MethodPost, "/v1/partners/"+url.PathEscape(name)+"/end", struct{}{}, &out)
}

// SetPartnerScope replaces what the partnership name may reach (admin).
func (c *Client) SetPartnerScope(ctx context.Context, name string, scope api.PartnerScope) (*api.Partner, error) {
	var out api.Partner
	return &out, c.do(ctx, http.MethodPut, "/v1/partners/"+url.PathEscape(name)+"/scope", scope, &out)
}

// ReportPartners reports the partner identities an inbound proxy saw and
// returns the partnerships in force (the proxy's workload identity).
func (c *Client) ReportPartners(ctx context.Context, report api.SightingReport) (*api.PartnerFeed, error) {
	var out api.PartnerFeed
	return &out, c.do(ctx, http.MethodPost, "/v1/proxy/partners", report, &out)
}
