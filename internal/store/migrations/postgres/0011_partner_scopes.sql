-- Partnership scopes and sightings. services and requests are what a
-- partnership may reach (JSON lists of SPIFFE ID patterns and "METHODS
-- PATH" rules, enforced by inbound proxies); a partnership made before
-- scopes existed has none and reaches nothing until `mutual partner scope`
-- gives it one. partner_sightings holds when each proxy (reporter, its
-- SPIFFE ID) last saw each partner identity.
ALTER TABLE partners ADD COLUMN services TEXT NOT NULL DEFAULT '[]';
ALTER TABLE partners ADD COLUMN requests TEXT NOT NULL DEFAULT '[]';
CREATE TABLE partner_sightings (
    partner    TEXT NOT NULL,
    spiffe_id  TEXT NOT NULL,
    reporter   TEXT NOT NULL,
    seen_at_us BIGINT NOT NULL,
    PRIMARY KEY (spiffe_id, reporter)
);
CREATE INDEX partner_sightings_by_partner ON partner_sightings (partner, seen_at_us);
