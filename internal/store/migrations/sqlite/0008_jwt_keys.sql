-- The JWT authority keys (ES256, PKCS#8 encrypted with the CA's
-- passphrase), shared by every replica: the newest active one signs
-- JWT-SVIDs, all of them are published until their overlap ends.
CREATE TABLE jwt_keys (
    kid           TEXT PRIMARY KEY,
    created_at_us INTEGER NOT NULL,
    key_pem       BLOB NOT NULL
);
