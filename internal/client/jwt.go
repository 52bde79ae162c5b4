package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
)

// NodeJWTSVID asks, as a node, for a JWT-SVID of one entry's identity.
func (c *Client) NodeJWTSVID(ctx context.Context, req api.NodeJWTSVIDRequest) (*api.JWTSVIDResponse, error) {
	var out api.JWTSVIDResponse
	return &out, c.do(ctx, http.MethodPost, "/v1/node/jwtsvid", req, &out)
}

// SPIFFEBundle fetches the CA's bundle of td in the SPIFFE bundle format:
// its roots and its JWT authority keys.
func (c *Client) SPIFFEBundle(ctx context.Context, td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	var raw json.RawMessage
	if err := c.do(ctx, http.MethodGet, "/v1/bundle/spiffe", nil, &raw); err != nil {
		return nil, err
	}
	b, err := spiffebundle.Parse(td, raw)
	if err != nil {
		return nil, fmt.Errorf("the CA's SPIFFE bundle for %s: %w", td, err)
	}
	return b, nil
}
