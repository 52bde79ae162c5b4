// Package publish is the CA side of revocation: it reads the CA's store and
// makes each revocation known within a second. CRL builds and caches the
// issuing CA's certificate revocation list (RFC 5280), Responder answers
// OCSP (RFC 6960) with a delegated responder certificate, and Hub follows
// the store's revocation log and serves it as the push feed that the
// Watchers of package revocation follow. The encoding they share (Event,
// the feed's path and header, CRLValidity, IssuerKeyID) belongs to package
// revocation.
package publish
