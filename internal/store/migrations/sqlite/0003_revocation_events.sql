-- Every revocation, in the order it was committed: the push feed replays it
-- from any point, and the CRL is rebuilt when it grows.
CREATE TABLE revocation_events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    serial        TEXT NOT NULL,
    spiffe_id     TEXT NOT NULL,
    node_id       TEXT,
    reason        INTEGER NOT NULL,
    revoked_at_us INTEGER NOT NULL,
    not_after_us  INTEGER NOT NULL
);
CREATE INDEX certificates_revoked ON certificates (revoked_at_us, not_after_us);
