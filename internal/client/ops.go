package client

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/revocation"
)

// Certificate looks up one issued certificate by serial, with its PEM (admin).
func (c *Client) Certificate(ctx context.Context, serial string) (*api.CertificateInfo, error) {
	var out api.CertificateInfo
	return &out, c.do(ctx, http.MethodGet, "/v1/certificates/"+url.PathEscape(serial), nil, &out)
}

// Summary fetches the estate at a glance (admin): live certificates by
// kind, identity and expiry, and the latest revocations.
func (c *Client) Summary(ctx context.Context) (*api.Summary, error) {
	var out api.Summary
	return &out, c.do(ctx, http.MethodGet, "/v1/certificates/summary", nil, &out)
}

// Health is what the CA's /healthz answered: "ok", or why it cannot issue.
type Health struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// Health asks the CA whether it can record an issuance now. A CA that
// answers 503 is reported in the Health, not as an error.
func (c *Client) Health(ctx context.Context) (*Health, error) {
	var h Health
	err := c.do(ctx, http.MethodGet, "/healthz", nil, &h)
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == http.StatusServiceUnavailable {
		return &Health{Status: "unavailable", Error: ae.Message}, nil
	}
	if err != nil {
		return nil, err
	}
	return &h, nil
}

// CRL fetches and parses the CRL the CA publishes for issuer (the
// intermediate), checking its signature by issuer.
func (c *Client) CRL(ctx context.Context, issuer *x509.Certificate) (*x509.RevocationList, error) {
	var der []byte
	if err := c.do(ctx, http.MethodGet, "/crl/"+revocation.IssuerKeyID(issuer)+".crl", nil, &der); err != nil {
		return nil, err
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("the CA's CRL does not parse: %w", err)
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return nil, fmt.Errorf("the CA's CRL is not signed by its intermediate: %w", err)
	}
	return crl, nil
}

// LogCheckpoint fetches the issuance log's signed checkpoint and the
// verifier key the CA publishes, unverified: check the one with the other
// (translog.OpenCheckpoint), and the key with the copy ca init wrote.
func (c *Client) LogCheckpoint(ctx context.Context) (checkpoint []byte, verifierKey string, err error) {
	if err := c.do(ctx, http.MethodGet, "/log/checkpoint", nil, &checkpoint); err != nil {
		return nil, "", err
	}
	var key []byte
	if err := c.do(ctx, http.MethodGet, "/log/key", nil, &key); err != nil {
		return nil, "", err
	}
	return checkpoint, strings.TrimSpace(string(key)), nil
}
