package api

// Error codes: the stable machine-readable names an Error carries in its
// "code" field. This list is the one place they are spelled; the server and
// the domain (ca, policy) write them from here, the client compares against
// them, and README.md's API section lists each with its status and meaning.
// A code, once published, keeps its spelling and meaning.
const (
	// CodeBadRequest (400): the body is not valid JSON of the expected shape,
	// a required field is missing, or the request names the wrong mix of things.
	CodeBadRequest = "bad_request"
	// CodeBadName (400): a DNS name or IP address is malformed or too many.
	CodeBadName = "bad_name"
	// CodeBadNode (400): a node given is not spiffe://TD/node/NAME (or a pattern of it).
	CodeBadNode = "bad_node"
	// CodeBadRole (400): a role is not one word of at most 64 characters.
	CodeBadRole = "bad_role"
	// CodeBadSelector (400): a workload selector does not parse.
	CodeBadSelector = "bad_selector"
	// CodeBadSerial (400): a serial number is not hex digits (colons allowed).
	CodeBadSerial = "bad_serial"
	// CodeTooLarge (400): the certificate would exceed the issuance log's entry size.
	CodeTooLarge = "too_large"

	// Policy refusals (400): the rule a request broke (see internal/policy).

	// CodeBadCSR (400): the CSR does not parse or carries a malformed extension.
	CodeBadCSR = "bad_csr"
	// CodeCSRSignature (400): the CSR is not signed by the key it contains.
	CodeCSRSignature = "csr_signature"
	// CodeWeakKey (400): the key's algorithm or size is below the policy.
	CodeWeakKey = "weak_key"
	// CodeCARequested (400): the CSR asks for a CA certificate.
	CodeCARequested = "ca_requested"
	// CodeForeignTrustDomain (400): the identity is in another trust domain.
	CodeForeignTrustDomain = "foreign_trust_domain"
	// CodeIdentityMismatch (400): the CSR names another identity than the grant.
	CodeIdentityMismatch = "identity_mismatch"
	// CodeNameNotGranted (400): the CSR asks for a name the grant does not give.
	CodeNameNotGranted = "name_not_granted"
	// CodeLifetime (400): a lifetime is negative or above the policy or grant maximum.
	CodeLifetime = "lifetime"
	// CodeBadIdentity (400): the SPIFFE ID is missing, malformed or has no path.
	CodeBadIdentity = "bad_identity"
	// CodeReservedIdentity (400): the identity (the CA's own, an operator,
	// a node) may not be granted this way.
	CodeReservedIdentity = "reserved_identity"

	// CodeTokenMalformed (401): the join token does not parse.
	CodeTokenMalformed = "token_malformed"
	// CodeTokenWrongCA (401): the join token was made for another CA.
	CodeTokenWrongCA = "token_wrong_ca"
	// CodeTokenUnknown (401): this CA never made the join token.
	CodeTokenUnknown = "token_unknown"
	// CodeTokenUsed (401): the join token was already used.
	CodeTokenUsed = "token_used"
	// CodeTokenExpired (401): the join token has expired.
	CodeTokenExpired = "token_expired"
	// CodeClientCertificateRequired (401): the endpoint needs a TLS client certificate.
	CodeClientCertificateRequired = "client_certificate_required"
	// CodeAdminRequired (401 without a client certificate, 403 with a
	// non-admin one): the endpoint needs an admin's certificate.
	CodeAdminRequired = "admin_required"
	// CodeNodeRequired (401 without a client certificate, 403 with a
	// non-node one): the endpoint needs a node's certificate.
	CodeNodeRequired = "node_required"
	// CodeWorkloadRequired (401 without a client certificate, 403 with
	// another kind): the endpoint needs a workload's certificate of this
	// trust domain (an inbound proxy's).
	CodeWorkloadRequired = "workload_required"

	// CodeNoIdentity (403): the client certificate carries no SPIFFE ID.
	CodeNoIdentity = "no_identity"
	// CodeCertExpired (403): the client certificate has expired (by the CA's clock).
	CodeCertExpired = "cert_expired"
	// CodeCertUnknown (403): the client certificate is not in the CA's records.
	CodeCertUnknown = "cert_unknown"
	// CodeCertRevoked (403): the client certificate was revoked.
	CodeCertRevoked = "cert_revoked"
	// CodeEntryNotGranted (403): no registration entry grants the identity to this node.
	CodeEntryNotGranted = "entry_not_granted"

	// CodeNotFound (404): the endpoint, certificate, entry or CRL named does not exist.
	CodeNotFound = "not_found"

	// CodeFeedStreamsPerIdentity (429): this identity has as many revocation
	// feed streams open as it may; retry later.
	CodeFeedStreamsPerIdentity = "feed_streams_per_identity"
	// CodeSightingReportsTooFrequent (429): this proxy sent partner sighting
	// reports more often than it may; retry after Retry-After.
	CodeSightingReportsTooFrequent = "sighting_reports_too_frequent"

	// CodeInternal (500, or 503 when retrying may help): an unexpected failure;
	// the CA's log says why.
	CodeInternal = "internal"
	// CodeStoreDamaged (500): the CA's store is damaged or was replaced; the
	// operator restores it from backup.
	CodeStoreDamaged = "store_damaged"

	// CodeStoreUnavailable (503): the CA's store cannot be reached; retry.
	CodeStoreUnavailable = "store_unavailable"
	// CodeSignFailed (503): the CA could not sign; retry.
	CodeSignFailed = "sign_failed"
	// CodeNoFeed (503): this server has no revocation feed.
	CodeNoFeed = "no_feed"
	// CodeFeedFull (503): the revocation feed has as many streams as it takes; retry later.
	CodeFeedFull = "feed_full"
)
