-- The expiring page lists live (unexpired, unrevoked) certificates that
-- expire within a window, newest issued first. Walking the issue-order
-- index from the newest row skips every live certificate that expires
-- later (400,000 rows at 1,000,000 certificates of 5.8-day lifetimes);
-- an index on not_after_us alone finds the window's rows but must sort
-- them all. Grouped by the day of expiry (UTC, in microseconds / 86400e6),
-- each day's rows are in list order, so the page reads the newest few of
-- each day in the window and keeps the newest of those
-- (listByExpiryDay in queries.go). not_after_us, last, lets the first and
-- the last day skip the rows outside the window (up to a day's worth)
-- without reading them from the table. Revoked rows are left out: the
-- page never wants them.
CREATE INDEX certificates_live_by_expiry_day ON certificates ((not_after_us / 86400000000), issued_at_us, serial, not_after_us)
    WHERE revoked_at_us IS NULL;
