-- operational_records without AUTOINCREMENT. Records are appended one row per
-- statement (catalog/src/appender.rs), and AUTOINCREMENT made SQLite read and
-- update `sqlite_sequence` after every row. The id only breaks ties in the
-- listing's order (received_at_us, id); a plain INTEGER PRIMARY KEY takes the
-- largest id plus one, which retention (deleting the oldest rows) lowers only
-- when it deletes every row.
-- PostgreSQL's table (a BIGSERIAL) has no such cost and is unchanged.
CREATE TABLE operational_records_rebuilt (
    id                      INTEGER PRIMARY KEY,
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
INSERT INTO operational_records_rebuilt SELECT * FROM operational_records;
DROP TABLE operational_records;
ALTER TABLE operational_records_rebuilt RENAME TO operational_records;
CREATE INDEX operational_records_by_time ON operational_records (received_at_us);
DELETE FROM sqlite_sequence WHERE name = 'operational_records';
