-- Where a certificate came from, so that revocation reaches what descends
-- from it: the serial it renewed (revoking a serial revokes its renewals)
-- and the registration entry that granted it (kept through renewals, which
-- stop when the entry is deleted).
ALTER TABLE certificates ADD COLUMN renewed_from TEXT;
ALTER TABLE certificates ADD COLUMN entry_id TEXT;
CREATE INDEX certificates_by_parent ON certificates (renewed_from);
UPDATE certificates SET renewed_from = substr(requested_by, 7) WHERE requested_by LIKE 'renew:%';
UPDATE certificates SET entry_id = substr(requested_by, 7) WHERE requested_by LIKE 'entry:%';

-- Identity and node revocations as state: a renewal presenting a
-- certificate issued at or before the newest revocation of its identity or
-- node is refused, even if that certificate escaped the revocation's list.
CREATE TABLE revoked_identities (
    spiffe_id     TEXT PRIMARY KEY,
    revoked_at_us INTEGER NOT NULL,
    reason        INTEGER NOT NULL
);
CREATE TABLE revoked_nodes (
    node_id       TEXT PRIMARY KEY,
    revoked_at_us INTEGER NOT NULL,
    reason        INTEGER NOT NULL
);
