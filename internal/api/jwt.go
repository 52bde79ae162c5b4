package api

import "time"

// JWT-SVID endpoints:
//
//	POST /v1/node/jwtsvid     NodeJWTSVIDRequest → JWTSVIDResponse (node mTLS)
//	GET  /v1/bundle/spiffe    the trust domain's SPIFFE bundle (JWKS: x509-svid
//	                          roots and jwt-svid keys), public

// NodeJWTSVIDRequest asks, as a node, for a JWT-SVID of one entry's identity.
type NodeJWTSVIDRequest struct {
	EntryID string `json:"entry_id"`
	// Audience is the JWT's aud: at least one value.
	Audience []string `json:"audience"`
	// TTL optionally asks for a shorter lifetime than the policy's.
	TTL Duration `json:"ttl,omitempty"`
}

// JWTSVIDResponse is a signed JWT-SVID.
type JWTSVIDResponse struct {
	SPIFFEID  string    `json:"spiffe_id"`
	Token     string    `json:"token"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
}
