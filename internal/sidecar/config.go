// Package sidecar runs a proxy as a process: it opens the certificate
// source, the revocation watcher (and, inbound, the OCSP stapler), the
// policy file, the partnerships feed (inbound, with a CA address), the
// listener and the metrics endpoint, runs them together
// and returns only when every one of them has stopped.
//
// Package proxy is the data path (handshake, authorization, relay); this
// package is what `mutual proxy inbound|outbound` assembles around it.
package sidecar

import (
	"log/slog"
	"time"

	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/watch"
)

// Config is one sidecar: an inbound or an outbound proxy and what it needs.
type Config struct {
	// Source is where the proxy's certificate comes from.
	Source Source
	// Revocation is where revocation comes from.
	Revocation Revocation
	// Listen is the address to accept on (required).
	Listen string
	// Metrics is the address for /metrics (and, inbound, /migration);
	// empty means no metrics listener.
	Metrics string
	// Limits are the production limits; zero fields are proxy's defaults.
	Limits proxy.Limits
	// TLS12 also allows TLS 1.2; TLS 1.3 otherwise.
	TLS12 bool
	// Log receives structured events; nil discards.
	Log *slog.Logger
	// PollInterval is how often the identity directory and the policy file
	// are checked for changes; zero means watch.DefaultInterval.
	PollInterval time.Duration
	// Reload, if set, makes the identity directory and the policy file be
	// re-read at once each time it fires (SIGHUP).
	Reload *watch.Trigger
	// Exactly one of Inbound and Outbound says what the proxy does.
	Inbound  *Inbound
	Outbound *Outbound
}

// Source names where the proxy's certificate comes from: exactly one of
// the fields is set.
type Source struct {
	// IdentityDir is an identity directory, followed as it is rewritten.
	IdentityDir string
	// WorkloadAPI is a SPIFFE Workload API address (unix:///path).
	WorkloadAPI string
}

// Revocation says where the proxy learns of revoked certificates. With
// neither CAURLs nor Off, the source is the identity directory's
// mutual.json, else the CRL or OCSP address in the proxy's own certificate;
// with none of them the proxy does not start.
type Revocation struct {
	// CAURLs are CA addresses for the push feed (CRL fallback).
	CAURLs []string
	// CRLInterval is how often the CRL is fetched while the feed is down.
	CRLInterval time.Duration
	// Off runs without any revocation check.
	Off bool
}

// Inbound terminates mutual TLS in front of a plaintext service.
type Inbound struct {
	// Target is the plaintext service, host:port.
	Target string
	// Allow is the policy of the --allow patterns (may be empty when
	// PolicyFile is set).
	Allow *authz.Policy
	// PolicyFile is a YAML policy merged with Allow and followed; empty
	// means Allow alone.
	PolicyFile string
	// Mode is strict or permissive; Protocol tcp or http.
	Mode     proxy.Mode
	Protocol proxy.Protocol
	// RequestLogLimit is proxy.InboundConfig's: forwarded requests (http
	// mode) or relayed connections (tcp mode; as many again for those
	// without mTLS) logged per second (0: the default, negative: all);
	// refusals and connections closed by revocation or the drain are
	// always logged.
	RequestLogLimit int
}

// Outbound originates mutual TLS for a plaintext client.
type Outbound struct {
	// Target is the mTLS server, host:port.
	Target string
	// ServerName, if set, must also be in the server's certificate.
	ServerName string
	// Expect are the SPIFFE ID patterns the server must match.
	Expect []authz.Pattern
}
