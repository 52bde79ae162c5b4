package ca

import (
	"context"
	"crypto/x509"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/jwtauthority"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
)

// GrantChecker verifies, ordered against revocations, that what authorizes
// an unrecorded credential still stands; *store.DB provides it.
type GrantChecker interface {
	CheckGrant(ctx context.Context, c *store.Certificate) error
}

// JWTKeys signs JWT-SVIDs and publishes their keys; *jwtauthority.Authority
// provides it.
type JWTKeys interface {
	Sign(c jwtauthority.Claims) (string, error)
	Bundle(td spiffeid.TrustDomain) *jwtbundle.Bundle
}

// JWTIssuer signs JWT-SVIDs for the workloads of a node, under the same
// entries, policy and revocations as their X.509-SVIDs.
type JWTIssuer struct {
	Authority *Authority
	Keys      JWTKeys
	Check     GrantChecker
}

// IssuedJWT is a JWT-SVID signed for a workload.
type IssuedJWT struct {
	ID       spiffeid.ID
	Token    string
	IssuedAt time.Time
	Expiry   time.Time
}

// IssueJWTForNode signs a JWT-SVID for the identity of entryID, for a
// workload on the node authenticated by peer, with audience (at least one
// value) and a lifetime the policy allows (ttl zero: the entry's or the
// policy default). A revoked identity, node or node certificate, or a
// deleted entry, is refused: checked against revocations after signing
// and before answering, so a revocation that has answered success stops
// every JWT-SVID not yet handed out.
func (j *JWTIssuer) IssueJWTForNode(ctx context.Context, peer *x509.Certificate, entryID string, audience []string, ttl time.Duration) (*IssuedJWT, error) {
	a := j.Authority
	start := a.now()
	if len(audience) == 0 {
		return nil, newErr(KindInvalid, api.CodeBadRequest, nil, "a JWT-SVID needs an audience: name the service that will validate it")
	}
	for _, aud := range audience {
		if aud == "" {
			return nil, newErr(KindInvalid, api.CodeBadRequest, nil, "an audience of a JWT-SVID is empty")
		}
	}
	node, e, grant, err := a.grantForNode(ctx, peer, entryID)
	if err != nil {
		return nil, err
	}
	lifetime, err := a.Policy.Lifetime(ttl, grant)
	if err != nil {
		return nil, classify(err)
	}
	tok, err := j.Keys.Sign(jwtauthority.Claims{Subject: grant.ID, Audience: audience, IssuedAt: start, Expiry: start.Add(lifetime)})
	if err != nil {
		return nil, err
	}
	check := &store.Certificate{SPIFFEID: grant.ID.String(), NodeID: node.String(), EntryID: e.ID, IssuedAt: start,
		Check: &store.IssueCheck{Presented: pki.FormatSerial(peer.SerialNumber)}}
	if err := j.Check.CheckGrant(ctx, check); err != nil {
		a.log().Warn("JWT-SVID refused", "spiffe_id", grant.ID.String(), "node_id", node.String(), "entry_id", e.ID, "error", err.Error())
		return nil, classify(err)
	}
	a.log().Info("JWT-SVID issued", "spiffe_id", grant.ID.String(), "node_id", node.String(), "entry_id", e.ID, "audience", audience, "expiry", start.Add(lifetime))
	return &IssuedJWT{ID: grant.ID, Token: tok, IssuedAt: start, Expiry: start.Add(lifetime)}, nil
}

// JWTBundle is the trust domain's JWT bundle: the keys that verify its
// JWT-SVIDs now.
func (j *JWTIssuer) JWTBundle() *jwtbundle.Bundle {
	return j.Keys.Bundle(j.Authority.Policy.TrustDomain)
}
