// Package revocation is the consumer side of revocation, used by proxies
// and agents: a Watcher follows the CA's push feed, falls back to the CRL
// (RFC 5280) when the feed is down, checks every CRL it takes, and tells
// its owner of each revocation at once; a Stapler keeps a checked OCSP
// response (RFC 6960) for the certificate a server presents.
//
// It also owns what both sides of the feed share: the Event encoding on
// the wire, the feed's path, header and heartbeat, and how a CA's CRL is
// named (IssuerKeyID). The CA side that builds the CRL, answers OCSP and
// serves the feed is package publish below it; this package never reads
// the CA's store.
package revocation
