-- Exchange entries of the audit ledger in runs (gateway/src/ledger/runs.rs):
-- consecutive entries of kind `exchange` written in one commit share one row.
-- With every exchange in the ledger, one row per entry was the largest part
-- of what the ledger's writes cost (an INSERT per answered request); a run
-- of up to 256 entries is one INSERT. What is hashed does not change.
--
-- `body` holds the run's entries back to back, 93 bytes each, the first at
-- `first_position`:
--   at_ms       13 ASCII digits, zero-padded (Unix milliseconds)
--   request_id  16 bytes (the gateway's request ids are 32 lowercase hex)
--   digest      32 bytes (the exchange's digest of its operational record)
--   hash        32 bytes (SHA-256 of the previous entry's hash and this one)
-- Kind and actor are `exchange` and `gateway`. An exchange entry that does
-- not fit (another request id) is a row of `ledger_log`, as other kinds are.
CREATE TABLE ledger_runs (
    first_position  INTEGER PRIMARY KEY,
    body            BLOB    NOT NULL
);

-- The view shows every entry as it is hashed, whichever table holds it.
DROP VIEW ledger_entries;
CREATE VIEW ledger_entries AS
WITH RECURSIVE run_entries(first_position, i, n) AS (
    SELECT first_position, 0, length(body) / 93 FROM ledger_runs
    UNION ALL
    SELECT first_position, i + 1, n FROM run_entries WHERE i + 1 < n
)
SELECT position, at_ms, kind, actor, request_id,
       COALESCE(payload, '{"digest":"' || lower(hex(digest)) || '","v":1}') AS payload,
       lower(hex(hash)) AS hash
FROM ledger_log
UNION ALL
SELECT r.first_position + e.i AS position,
       CAST(CAST(substr(r.body, e.i * 93 + 1, 13) AS TEXT) AS INTEGER) AS at_ms,
       'exchange' AS kind,
       'gateway' AS actor,
       lower(hex(substr(r.body, e.i * 93 + 14, 16))) AS request_id,
       '{"digest":"' || lower(hex(substr(r.body, e.i * 93 + 30, 32))) || '","v":1}' AS payload,
       lower(hex(substr(r.body, e.i * 93 + 62, 32))) AS hash
FROM run_entries e JOIN ledger_runs r ON r.first_position = e.first_position;
