-- SPIFFE federation. federations: the foreign trust domains whose bundles
-- this CA fetches, and how (bundle endpoint URL, profile https_web or
-- https_spiffe, the endpoint's SPIFFE ID, optional web roots in PEM; empty
-- means the system's), with the outcome of the last fetch.
CREATE TABLE federations (
    trust_domain       TEXT PRIMARY KEY,
    endpoint_url       TEXT NOT NULL,
    profile            TEXT NOT NULL,
    endpoint_spiffe_id TEXT NOT NULL,
    web_roots_pem      TEXT NOT NULL,
    created_at_us      BIGINT NOT NULL,
    created_by         TEXT NOT NULL,
    last_attempt_us    BIGINT NOT NULL DEFAULT 0,
    last_error         TEXT NOT NULL DEFAULT ''
);

-- The trust bundles this CA holds: its own (served on the bundle endpoint)
-- and each federated one (the last good one fetched). fingerprints are the
-- SHA-256 of each X.509 authority, hex, as a JSON list.
CREATE TABLE trust_bundles (
    trust_domain     TEXT PRIMARY KEY,
    sequence         BIGINT NOT NULL,
    refresh_hint_us  BIGINT NOT NULL,
    x509_authorities TEXT NOT NULL,
    fingerprints     TEXT NOT NULL,
    updated_at_us    BIGINT NOT NULL,
    updated_by       TEXT NOT NULL
);

-- Every change to a bundle or a federation, never updated or deleted: who,
-- when, what (action), and which keys came and went.
CREATE TABLE bundle_changes (
    id BIGSERIAL PRIMARY KEY,
    trust_domain TEXT NOT NULL,
    at_us        BIGINT NOT NULL,
    by_whom      TEXT NOT NULL,
    action       TEXT NOT NULL,
    sequence     BIGINT NOT NULL,
    added        TEXT NOT NULL,
    removed      TEXT NOT NULL
);
CREATE INDEX bundle_changes_by_domain ON bundle_changes (trust_domain, id);
