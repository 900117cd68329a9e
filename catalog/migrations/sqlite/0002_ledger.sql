-- The audit ledger: an append-only, hash-chained record of evidence
-- (plugin registrations now; exchanges and administrative actions later),
-- with checkpoints signed by the node's Ed25519 key.

CREATE TABLE ledger_entries (
    -- 0 for the first entry, then consecutive.
    position    INTEGER PRIMARY KEY,
    at_ms       INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    -- who registered it: `plugin:<name>`, later operators and the gateway
    actor       TEXT    NOT NULL,
    request_id  TEXT    NOT NULL DEFAULT '',
    payload     TEXT    NOT NULL,
    -- lowercase hex SHA-256; the first entry's prev_hash is 64 zeros
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL
);

CREATE TABLE ledger_checkpoints (
    -- the last entry the checkpoint covers
    position    INTEGER PRIMARY KEY,
    hash        TEXT    NOT NULL,
    at_ms       INTEGER NOT NULL,
    -- hex Ed25519 public key of the signing node, and the hex signature of
    -- "chasqui-ledger-checkpoint" || position (8 bytes BE) || hash (32 bytes)
    public_key  TEXT    NOT NULL,
    signature   TEXT    NOT NULL
);
