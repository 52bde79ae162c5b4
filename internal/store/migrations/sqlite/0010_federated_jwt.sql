-- The JWT authorities of each federated trust domain (the jwt-svid keys of
-- its SPIFFE bundle), as a JWKS document; empty when it publishes none. The
-- agents validate JWT-SVIDs of that trust domain with them.
ALTER TABLE trust_bundles ADD COLUMN jwt_authorities TEXT NOT NULL DEFAULT '';
