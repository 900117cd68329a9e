-- Security incidents reported by plugins (CGII), their notifications to the
-- affected entities' security contacts, and the fees plugins record (PPE).

-- Where an entity wants security incidents delivered (an HTTPS webhook).
ALTER TABLE entities ADD COLUMN incident_webhook TEXT;

CREATE TABLE incidents (
    id              TEXT    PRIMARY KEY,
    at_ms           INTEGER NOT NULL,
    plugin          TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    severity        TEXT    NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    summary         TEXT    NOT NULL,
    detail          TEXT    NOT NULL,
    blocked         INTEGER NOT NULL CHECK (blocked IN (0, 1)),
    request_id      TEXT    NOT NULL,
    service         TEXT    NOT NULL,
    environment     TEXT    NOT NULL,
    consumer_entity TEXT,
    consumer_system TEXT,
    client_address  TEXT,
    status          TEXT    NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged', 'closed'))
);
CREATE INDEX incidents_by_time ON incidents (at_ms);

CREATE TABLE incident_notifications (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id     TEXT    NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
    -- the entity notified and why (`publisher` or `consumer`)
    entity_code     TEXT    NOT NULL,
    party           TEXT    NOT NULL CHECK (party IN ('publisher', 'consumer')),
    -- NULL when the entity has no webhook registered: nothing to deliver
    target          TEXT,
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed', 'no-contact')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    delivered_at_ms INTEGER,
    last_error      TEXT,
    UNIQUE (incident_id, entity_code)
);
CREATE INDEX incident_notifications_due ON incident_notifications (state, next_attempt_ms);

-- Fees recorded by plugins, summed per consumer x service x environment x
-- hour x item (PPE's payment fees).
CREATE TABLE metering_fees (
    hour_start      INTEGER NOT NULL,
    consumer_entity TEXT    NOT NULL,
    consumer_system TEXT    NOT NULL,
    service         TEXT    NOT NULL,
    environment     TEXT    NOT NULL,
    item            TEXT    NOT NULL,
    currency        TEXT    NOT NULL,
    amount_minor    INTEGER NOT NULL,
    count           INTEGER NOT NULL,
    PRIMARY KEY (hour_start, consumer_entity, consumer_system, service, environment, item, currency)
);
