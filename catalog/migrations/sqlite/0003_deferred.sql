-- Store-and-forward (contingency): requests the gateway accepted with 202
-- while their upstream could not be reached, kept here until delivered in
-- order. A row is written (and committed) before the client gets its 202, so
-- nothing acknowledged is lost on a crash.

CREATE TABLE deferred_requests (
    -- delivery order within a service environment
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    -- the tracking id given to the client (and sent upstream as Idempotency-Key)
    id              TEXT    NOT NULL UNIQUE,
    service         TEXT    NOT NULL,
    environment     TEXT    NOT NULL CHECK (environment IN ('pruebas', 'produccion')),
    consumer_entity TEXT    NOT NULL,
    consumer_system TEXT    NOT NULL,
    request_id      TEXT    NOT NULL,
    method          TEXT    NOT NULL,
    -- path and query as sent upstream (after the service prefix)
    upstream_path   TEXT    NOT NULL,
    -- JSON array of [name, value] pairs, as they would have gone upstream
    headers         TEXT    NOT NULL,
    body            BLOB    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    accepted_at_ms  INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    delivered_at_ms INTEGER,
    last_error      TEXT,
    upstream_status INTEGER,
    response_type   TEXT,
    response_body   BLOB
);
CREATE INDEX deferred_queue ON deferred_requests (service, environment, state, seq);
