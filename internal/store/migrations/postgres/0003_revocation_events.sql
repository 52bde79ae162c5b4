-- Every revocation, in the order it was committed: the push feed replays it
-- from any point, and the CRL is rebuilt when it grows. Revocations take an
-- advisory lock so that sequence order is commit order across replicas.
CREATE TABLE revocation_events (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    serial        TEXT NOT NULL,
    spiffe_id     TEXT NOT NULL,
    node_id       TEXT,
    reason        BIGINT NOT NULL,
    revoked_at_us BIGINT NOT NULL,
    not_after_us  BIGINT NOT NULL
);
CREATE INDEX certificates_revoked ON certificates (revoked_at_us, not_after_us);
