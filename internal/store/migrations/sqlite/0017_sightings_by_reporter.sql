-- A partnership over its sightings cap loses them from the reporters
-- holding the most (RecordSightings): it counts them by reporter and trims
-- one reporter's oldest. This index answers both from its entries alone,
-- where partner_sightings_by_partner made them read every sighting of the
-- partnership. (PostgreSQL builds it outside a transaction.)
CREATE INDEX IF NOT EXISTS partner_sightings_by_reporter ON partner_sightings (partner, reporter, seen_at_us);
