-- Operational records in segments (catalog/src/oprecords/segment.rs): the
-- records of one writer's transaction in one row, their time span in columns
-- and the records encoded in `body` (first byte 0x01: binary, version 1).
-- One row per record cost the writer more than the rest of metering and
-- audit together. PostgreSQL keeps one row per record.
CREATE TABLE operational_record_segments (
    id                  INTEGER PRIMARY KEY,
    -- the earliest and latest received_at_us (Unix microseconds) of its records
    first_received_us   INTEGER NOT NULL,
    last_received_us    INTEGER NOT NULL,
    -- how many records it holds
    records             INTEGER NOT NULL,
    body                BLOB    NOT NULL
);
-- The listing reads segments newest first; retention deletes the oldest.
CREATE INDEX operational_record_segments_by_time
    ON operational_record_segments (last_received_us);

-- Rows stored one by one before become segments of up to 500, in their
-- order, each body a JSON array of objects named like the record's fields
-- (the decoder reads both encodings).
INSERT INTO operational_record_segments (first_received_us, last_received_us, records, body)
SELECT min(received_at_us), max(received_at_us), count(*),
       CAST(json_group_array(json_object(
           'request_id', request_id,
           'trace_id', trace_id,
           'consumer_entity', consumer_entity,
           'consumer_system', consumer_system,
           'service', service,
           'route', route,
           'environment', environment,
           'method', method,
           'status', status,
           'request_bytes', request_bytes,
           'response_bytes', response_bytes,
           'received_at_us', received_at_us,
           'sent_upstream_at_us', sent_upstream_at_us,
           'upstream_answered_at_us', upstream_answered_at_us,
           'answered_at_us', answered_at_us,
           'plugin_outcome', plugin_outcome,
           'error_type', error_type) ORDER BY id) AS BLOB)
FROM operational_records
GROUP BY (id - 1) / 500
ORDER BY min(id);

DROP TABLE operational_records;
