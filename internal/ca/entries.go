package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/policy"
	"github.com/mutual-tls/mutual/internal/selector"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/translog"
)

// EntryRequest asks for a registration entry.
type EntryRequest struct {
	// ID is the identity granted.
	ID string
	// Nodes are node IDs or patterns (spiffe://td/node/*) whose workloads may
	// obtain it.
	Nodes []string
	// Selectors must all match the calling workload.
	Selectors []string
	// CertTTL is the certificate lifetime; zero means the policy default.
	CertTTL  time.Duration
	DNSNames []string
	Roles    []string
}

// CreateEntry validates and stores a registration entry.
func (a *Authority) CreateEntry(ctx context.Context, by spiffeid.ID, r EntryRequest) (store.Entry, error) {
	id, err := a.Policy.ParseID(r.ID)
	if err != nil {
		return store.Entry{}, classify(err)
	}
	if err := a.Policy.CheckEntryGrant(policy.Grant{ID: id, DNSNames: r.DNSNames, TTL: r.CertTTL, Roles: r.Roles}, r.Nodes); err != nil {
		return store.Entry{}, classify(err)
	}
	if _, err := selector.ParseAll(r.Selectors); err != nil {
		return store.Entry{}, newErr(KindInvalid, api.CodeBadSelector, err, "%v", err)
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return store.Entry{}, err
	}
	e := store.Entry{
		ID: hex.EncodeToString(b[:]), SPIFFEID: id.String(), Nodes: r.Nodes, Selectors: r.Selectors,
		CertTTL: r.CertTTL, DNSNames: r.DNSNames, Roles: r.Roles, CreatedAt: a.now(), CreatedBy: by.String(),
	}
	if err := a.Store.CreateEntry(ctx, e); err != nil {
		return store.Entry{}, classify(err)
	}
	a.log().Info("entry created", "entry_id", e.ID, "spiffe_id", e.SPIFFEID, "nodes", strings.Join(e.Nodes, ","), "selectors", strings.Join(e.Selectors, ","), "by", by.String())
	return e, nil
}

// ListEntries returns every entry.
func (a *Authority) ListEntries(ctx context.Context) ([]store.Entry, error) {
	es, err := a.Store.ListEntries(ctx)
	return es, classify(err)
}

// DeleteEntry removes an entry.
func (a *Authority) DeleteEntry(ctx context.Context, by spiffeid.ID, id string) error {
	if err := a.Store.DeleteEntry(ctx, id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return newErr(KindNotFound, api.CodeNotFound, err, "no entry %s", id)
		}
		return classify(err)
	}
	a.log().Info("entry deleted", "entry_id", id, "by", by.String())
	return nil
}

// nodeOf checks that a verified client certificate is a current node
// identity of this CA.
func (a *Authority) nodeOf(ctx context.Context, peer *x509.Certificate) (spiffeid.ID, error) {
	id, err := a.CheckPeer(ctx, peer)
	if err != nil {
		return spiffeid.ID{}, err
	}
	if pki.KindOf(id) != pki.KindNode {
		return spiffeid.ID{}, newErr(KindForbidden, api.CodeNodeRequired, nil, "%s is not a node identity (spiffe://%s/node/NAME)", id, a.Policy.TrustDomain.Name())
	}
	return id, nil
}

func entryGrants(e store.Entry, node spiffeid.ID) bool {
	for _, n := range e.Nodes {
		if p, err := authz.ParsePattern(n); err == nil && p.Match(node) {
			return true
		}
	}
	return false
}

// EntriesForNode returns the entries that grant identities to workloads on
// the node authenticated by peer.
func (a *Authority) EntriesForNode(ctx context.Context, peer *x509.Certificate) (spiffeid.ID, []store.Entry, error) {
	node, err := a.nodeOf(ctx, peer)
	if err != nil {
		return spiffeid.ID{}, nil, err
	}
	all, err := a.Store.ListEntries(ctx)
	if err != nil {
		return node, nil, classify(err)
	}
	var out []store.Entry
	for _, e := range all {
		if entryGrants(e, node) {
			out = append(out, e)
		}
	}
	return node, out, nil
}

// IssueForNode issues the identity of entryID to a workload on the node
// authenticated by peer. Whatever the node claims, the CA checks that the
// entry exists and grants its identity to this node; that the entry still
// exists and that the node is not revoked is checked again inside the
// issuing transaction.
func (a *Authority) IssueForNode(ctx context.Context, peer *x509.Certificate, entryID string, csrPEM []byte) (*Issued, error) {
	node, e, grant, err := a.grantForNode(ctx, peer, entryID)
	if err != nil {
		return nil, err
	}
	return a.issue(ctx, issueRequest{grant: grant, csrPEM: csrPEM, requestedBy: translog.EntryRequester(e.ID),
		origin: origin{node: node.String(), entry: e.ID, presented: pki.FormatSerial(peer.SerialNumber)}})
}

// grantForNode authenticates peer as a node and returns the grant of
// entryID, refusing an entry that does not exist or does not grant its
// identity to this node.
func (a *Authority) grantForNode(ctx context.Context, peer *x509.Certificate, entryID string) (spiffeid.ID, store.Entry, policy.Grant, error) {
	node, err := a.nodeOf(ctx, peer)
	if err != nil {
		return node, store.Entry{}, policy.Grant{}, err
	}
	e, err := a.Store.GetEntry(ctx, entryID)
	if errors.Is(err, store.ErrNotFound) {
		return node, e, policy.Grant{}, newErr(KindForbidden, api.CodeEntryNotGranted, nil, "no entry %s grants an identity to %s", entryID, node)
	}
	if err != nil {
		return node, e, policy.Grant{}, classify(err)
	}
	if !entryGrants(e, node) {
		a.log().Warn("node asked for an identity not granted to it", "node_id", node.String(), "entry_id", e.ID, "spiffe_id", e.SPIFFEID)
		return node, e, policy.Grant{}, newErr(KindForbidden, api.CodeEntryNotGranted, nil, "entry %s (%s) does not grant its identity to %s", e.ID, e.SPIFFEID, node)
	}
	id, err := spiffeid.FromString(e.SPIFFEID)
	if err != nil {
		return node, e, policy.Grant{}, classify(err)
	}
	return node, e, policy.Grant{ID: id, DNSNames: e.DNSNames, TTL: e.CertTTL, Roles: e.Roles}, nil
}
