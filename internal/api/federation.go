package api

import "time"

// Federation endpoints:
//
//	GET    /v1/federation/bundle       this trust domain's SPIFFE bundle (anonymous; the bundle endpoint)
//	POST   /v1/federations             FederationRequest → Federation (admin)
//	GET    /v1/federations             FederationList (admin)
//	DELETE /v1/federations/{td}        (admin)
//	GET    /v1/federations/changes     BundleChangeList (admin; ?trust_domain=)

// FederationRequest asks for a federation relationship with a foreign trust
// domain.
type FederationRequest struct {
	TrustDomain string `json:"trust_domain"`
	// EndpointURL is the foreign bundle endpoint (https://...).
	EndpointURL string `json:"bundle_endpoint_url"`
	// Profile is "https_web" or "https_spiffe".
	Profile string `json:"bundle_endpoint_profile"`
	// EndpointSPIFFEID is the endpoint's SPIFFE ID (https_spiffe).
	EndpointSPIFFEID string `json:"endpoint_spiffe_id,omitempty"`
	// Bundle is the foreign bundle exchanged out of band: SPIFFE bundle
	// JSON or PEM certificates.
	Bundle string `json:"bundle,omitempty"`
	// WebRootsPEM are the roots an https_web endpoint must chain to; empty
	// means the system's.
	WebRootsPEM string `json:"web_roots_pem,omitempty"`
}

// Federation is a relationship and the foreign bundle held for it.
type Federation struct {
	TrustDomain      string    `json:"trust_domain"`
	EndpointURL      string    `json:"bundle_endpoint_url"`
	Profile          string    `json:"bundle_endpoint_profile"`
	EndpointSPIFFEID string    `json:"endpoint_spiffe_id,omitempty"`
	CreatedAt        time.Time `json:"created_at"`
	CreatedBy        string    `json:"created_by"`
	// LastAttempt and LastError are the last fetch and its failure, if any.
	LastAttempt *time.Time `json:"last_attempt,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	// Sequence, Keys (SHA-256 fingerprints) and BundleUpdatedAt describe
	// the bundle held; Keys is empty when none is held yet.
	Sequence        int64      `json:"sequence"`
	Keys            []string   `json:"keys"`
	BundleUpdatedAt *time.Time `json:"bundle_updated_at,omitempty"`
}

// FederationList lists the relationships.
type FederationList struct {
	Federations []Federation `json:"federations"`
}

// BundleChange is one record of the federation audit trail.
type BundleChange struct {
	TrustDomain string    `json:"trust_domain"`
	At          time.Time `json:"at"`
	By          string    `json:"by"`
	Action      string    `json:"action"`
	Sequence    int64     `json:"sequence"`
	Added       []string  `json:"added"`
	Removed     []string  `json:"removed"`
}

// BundleChangeList is the federation audit trail, oldest first.
type BundleChangeList struct {
	Changes []BundleChange `json:"changes"`
}

// Partnership endpoints (admin):
//
//	POST /v1/partners                PartnerRequest → Partner
//	GET  /v1/partners                PartnerList
//	GET  /v1/partners/{name}         PartnerDetail
//	POST /v1/partners/{name}/tokens  PartnerTokenRequest → TokenResponse
//	POST /v1/partners/{name}/end     RevokeResponse
//	PUT  /v1/partners/{name}/scope   PartnerScope → Partner
//
// And for inbound proxies, holding a workload identity of this trust domain:
//
//	POST /v1/proxy/partners          SightingReport → PartnerFeed

// PartnerRequest asks for a partnership.
type PartnerRequest struct {
	Name string `json:"name"`
	// TrustDomain is the partner's federated trust domain, if any.
	TrustDomain string    `json:"trust_domain,omitempty"`
	Roles       []string  `json:"roles,omitempty"`
	EndsAt      time.Time `json:"ends_at"`
	PartnerScope
}

// PartnerScope is what a partnership's identities may reach through
// inbound proxies: services by SPIFFE ID pattern (at least one), and
// optionally "METHODS PATH" rules ("GET,HEAD /v1/orders/"); no rule means
// every request to those services.
type PartnerScope struct {
	Services []string `json:"services"`
	Requests []string `json:"requests,omitempty"`
}

// Partner is a partnership.
type Partner struct {
	Name        string     `json:"name"`
	TrustDomain string     `json:"trust_domain,omitempty"`
	Roles       []string   `json:"roles"`
	EndsAt      time.Time  `json:"ends_at"`
	CreatedAt   time.Time  `json:"created_at"`
	CreatedBy   string     `json:"created_by"`
	EndedAt     *time.Time `json:"ended_at,omitempty"`
	EndedBy     string     `json:"ended_by,omitempty"`
	// IDPrefix is where its identities live: spiffe://TD/partner/NAME/.
	IDPrefix string `json:"id_prefix"`
	PartnerScope
	// Live counts its unexpired, unrevoked certificates; SoonestExpiry is
	// when the first of them expires.
	Live          int        `json:"live_certificates"`
	SoonestExpiry *time.Time `json:"soonest_expiry,omitempty"`
	// LastSeen is the latest sighting of any of its identities by a proxy.
	LastSeen *Sighting `json:"last_seen,omitempty"`
}

// Sighting is a partner identity seen by an inbound proxy.
type Sighting struct {
	SPIFFEID string `json:"spiffe_id"`
	// Proxy is the SPIFFE ID of the proxy that saw it.
	Proxy string    `json:"proxy"`
	At    time.Time `json:"at"`
}

// PartnerList lists partnerships.
type PartnerList struct {
	Partners []Partner `json:"partners"`
}

// PartnerDetail is a partnership and what it holds.
type PartnerDetail struct {
	Partner
	Certificates []CertificateInfo `json:"certificates"`
	// Sightings are the latest per identity and proxy, newest first.
	Sightings []Sighting `json:"sightings"`
}

// SightingReport is what an inbound proxy saw of partner identities since
// its last report (at most MaxSightings).
type SightingReport struct {
	Seen []Seen `json:"seen"`
}

// MaxSightings is the most sightings one report may carry.
const MaxSightings = 1000

// MaxSightingReportBytes bounds a SightingReport's body: MaxSightings
// sightings of SPIFFE IDs up to their 2048-byte limit, which
// MaxBodyBytes would not hold.
const MaxSightingReportBytes = MaxSightings * (2048 + 128)

// Seen is one partner identity a proxy saw, and when last.
type Seen struct {
	SPIFFEID string    `json:"spiffe_id"`
	At       time.Time `json:"at"`
}

// PartnerFeed answers a SightingReport: the partnerships in force, as
// proxies enforce them, and how many sightings were recorded.
type PartnerFeed struct {
	Partners []PartnerInForce `json:"partners"`
	Recorded int              `json:"recorded"`
}

// PartnerInForce is one partnership in force: its name (identities under
// spiffe://TD/partner/NAME/), its federated trust domain if any, and its
// scope.
type PartnerInForce struct {
	Name        string `json:"name"`
	TrustDomain string `json:"trust_domain,omitempty"`
	PartnerScope
}

// PartnerTokenRequest asks for a join token for spiffe://TD/partner/NAME/PATH.
type PartnerTokenRequest struct {
	Path string   `json:"path"`
	TTL  Duration `json:"ttl,omitempty"`
}
