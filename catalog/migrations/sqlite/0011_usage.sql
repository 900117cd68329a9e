-- Hourly usage per consumer entity x consumer system x service x environment
-- x hour, added to by the gateway from each batch of operational records
-- (never on the request path). Empty entity and system: unauthenticated
-- calls. Latency (received to answered) is counted in fixed buckets, each
-- column the calls whose latency is at most its bound and above the previous
-- one; `lat_inf` above 10 s.
CREATE TABLE usage_hourly (
    -- Unix seconds of the start of the hour (UTC)
    hour_start      INTEGER NOT NULL,
    consumer_entity TEXT    NOT NULL,
    consumer_system TEXT    NOT NULL,
    -- `entidad/v{n}` as requested; empty when the path named no service
    service         TEXT    NOT NULL,
    environment     TEXT    NOT NULL,
    calls           INTEGER NOT NULL,
    -- answers 400-499 and 500-599; a call answered nothing (status 0) is
    -- counted in calls only
    errors_4xx      INTEGER NOT NULL,
    errors_5xx      INTEGER NOT NULL,
    bytes_in        INTEGER NOT NULL,
    bytes_out       INTEGER NOT NULL,
    latency_sum_us  INTEGER NOT NULL,
    lat_5ms         INTEGER NOT NULL,
    lat_10ms        INTEGER NOT NULL,
    lat_25ms        INTEGER NOT NULL,
    lat_50ms        INTEGER NOT NULL,
    lat_100ms       INTEGER NOT NULL,
    lat_250ms       INTEGER NOT NULL,
    lat_500ms       INTEGER NOT NULL,
    lat_1s          INTEGER NOT NULL,
    lat_2500ms      INTEGER NOT NULL,
    lat_5s          INTEGER NOT NULL,
    lat_10s         INTEGER NOT NULL,
    lat_inf         INTEGER NOT NULL,
    PRIMARY KEY (hour_start, consumer_entity, consumer_system, service, environment)
);
CREATE INDEX usage_hourly_by_service ON usage_hourly (service, hour_start);
CREATE INDEX usage_hourly_by_entity ON usage_hourly (consumer_entity, hour_start);
