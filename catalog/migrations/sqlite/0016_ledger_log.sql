-- The audit ledger stored compactly (gateway/src/ledger.rs). With every
-- exchange in the ledger, its rows were most of the bytes the gateway wrote
-- per request: two hashes as hex text, one of them (prev_hash) the previous
-- row's hash again, and each exchange's payload as a JSON text around a hex
-- digest. Now a hash is its 32 bytes, the previous hash is the previous row's
-- (verification recomputes the chain anyway), and an exchange keeps only its
-- digest. What is hashed does not change: an exchange's payload is still
-- {"digest":"<lowercase hex>","v":1}, rebuilt from `digest`, so receipts and
-- checkpoints made before stay valid.
CREATE TABLE ledger_log (
    -- 0 for the first entry, then consecutive.
    position    INTEGER PRIMARY KEY,
    at_ms       INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    request_id  TEXT    NOT NULL DEFAULT '',
    -- the JSON payload; NULL for an exchange, whose payload is made of `digest`
    payload     TEXT,
    -- an exchange's digest of its operational record (32 bytes), else NULL
    digest      BLOB,
    -- SHA-256 of the previous entry's hash and this entry (32 bytes)
    hash        BLOB    NOT NULL
);

-- Old rows keep their payload text. A hash that is not 64 hex digits (only
-- a tampered row has one) becomes 32 zero bytes: verification then names
-- that entry as altered, as it did before.
INSERT INTO ledger_log (position, at_ms, kind, actor, request_id, payload, digest, hash)
SELECT position, at_ms, kind, actor, request_id, payload, NULL,
       CASE WHEN length(hash) = 64 AND unhex(hash) IS NOT NULL
            THEN unhex(hash) ELSE zeroblob(32) END
FROM ledger_entries;

DROP TABLE ledger_entries;

-- The entries as they are hashed and shown: payload as text, hash in
-- lowercase hex. Read it; write `ledger_log`.
CREATE VIEW ledger_entries AS
SELECT position, at_ms, kind, actor, request_id,
       COALESCE(payload, '{"digest":"' || lower(hex(digest)) || '","v":1}') AS payload,
       lower(hex(hash)) AS hash
FROM ledger_log;
