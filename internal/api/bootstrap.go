package api

// BootstrapALPN is the ALPN protocol a client offers (with http/1.1) in
// the handshake that fetches the CA's root to check it against a join
// token's fingerprint: only then does the CA's TLS chain carry its root.
// Everyone else gets leaf and intermediate, as RFC 8446 section 4.4.2
// allows: a self-signed root in the chain is dead weight to those who
// trust it and no help to those who do not.
const BootstrapALPN = "mutual-bootstrap"
