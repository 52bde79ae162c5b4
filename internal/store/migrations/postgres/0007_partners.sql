-- Partnerships: another organisation's scoped, time-bound access. Its
-- identities are spiffe://TD/partner/NAME/...; their certificates carry
-- roles and never outlive ends_at_us. trust_domain names the partner's
-- federated trust domain, if it has one. ended_at_us is 0 while the
-- partnership lasts; ending it revokes everything issued under it.
CREATE TABLE partners (
    name          TEXT PRIMARY KEY,
    trust_domain  TEXT NOT NULL,
    roles         TEXT NOT NULL,
    ends_at_us    BIGINT NOT NULL,
    created_at_us BIGINT NOT NULL,
    created_by    TEXT NOT NULL,
    ended_at_us   BIGINT NOT NULL DEFAULT 0,
    ended_by      TEXT NOT NULL DEFAULT ''
);
