-- The operational record of every request the data plane served: who called
-- what, how it ended, its sizes and the times of its steps (Unix
-- microseconds; NULL when a step did not happen). Written in batches off the
-- request path; rows older than the retention period are deleted.
CREATE TABLE operational_records (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id              TEXT    NOT NULL,
    trace_id                TEXT,
    -- empty when the request was not authenticated
    consumer_entity         TEXT    NOT NULL DEFAULT '',
    consumer_system         TEXT    NOT NULL DEFAULT '',
    -- `entidad/v{n}` as requested; empty when the path named no service
    service                 TEXT    NOT NULL DEFAULT '',
    -- the path below the service, identifiers as `{id}`, no query
    route                   TEXT    NOT NULL DEFAULT '',
    -- empty when the request was not authenticated
    environment             TEXT    NOT NULL DEFAULT '',
    method                  TEXT    NOT NULL,
    status                  INTEGER NOT NULL,
    request_bytes           INTEGER NOT NULL,
    response_bytes          INTEGER NOT NULL,
    received_at_us          INTEGER NOT NULL,
    sent_upstream_at_us     INTEGER,
    upstream_answered_at_us INTEGER,
    answered_at_us          INTEGER NOT NULL,
    -- the status a plugin answered with, or empty
    plugin_outcome          TEXT    NOT NULL DEFAULT '',
    -- the problem slug the request ended with, or empty
    error_type              TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX operational_records_by_time ON operational_records (received_at_us);
