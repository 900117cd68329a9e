-- The catalog schema that the data plane needs: entities, services with their
-- version and per-environment upstreams, consumer systems, grants and tokens.
-- Times are Unix seconds (INTEGER) so the same schema ports to PostgreSQL.

CREATE TABLE entities (
    id          INTEGER PRIMARY KEY,
    code        TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    kind        TEXT    NOT NULL DEFAULT 'public' CHECK (kind IN ('public', 'private')),
    created_at  INTEGER NOT NULL
);

CREATE TABLE services (
    id          INTEGER PRIMARY KEY,
    entity_id   INTEGER NOT NULL REFERENCES entities(id),
    code        TEXT    NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 0),
    name        TEXT    NOT NULL,
    description TEXT    NOT NULL DEFAULT '',
    category    TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'published'
                CHECK (status IN ('draft', 'testing', 'published', 'deprecated')),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (entity_id, code),
    -- one URL per provider and version: /{entidad}/v{n}/
    UNIQUE (entity_id, version)
);

-- Per service and environment: how to reach and trust its upstreams.
CREATE TABLE service_environments (
    service_id          INTEGER NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    environment         TEXT    NOT NULL CHECK (environment IN ('pruebas', 'produccion')),
    -- PEM bundle of the CA(s) that sign the upstreams' certificates; NULL means
    -- the system's trust store.
    ca_pem              TEXT,
    connect_timeout_ms  INTEGER,
    read_timeout_ms     INTEGER,
    PRIMARY KEY (service_id, environment)
);

CREATE TABLE upstreams (
    id          INTEGER PRIMARY KEY,
    service_id  INTEGER NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    environment TEXT    NOT NULL CHECK (environment IN ('pruebas', 'produccion')),
    url         TEXT    NOT NULL,
    weight      INTEGER NOT NULL DEFAULT 1 CHECK (weight > 0),
    UNIQUE (service_id, environment, url)
);

-- A consumer system of an entity (the caller that holds tokens).
CREATE TABLE consumers (
    id          INTEGER PRIMARY KEY,
    entity_id   INTEGER NOT NULL REFERENCES entities(id),
    code        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (entity_id, code)
);

CREATE TABLE grants (
    id          INTEGER PRIMARY KEY,
    consumer_id INTEGER NOT NULL REFERENCES consumers(id) ON DELETE CASCADE,
    service_id  INTEGER NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    environment TEXT    NOT NULL CHECK (environment IN ('pruebas', 'produccion')),
    status      TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'revoked')),
    created_at  INTEGER NOT NULL,
    UNIQUE (consumer_id, service_id, environment)
);

CREATE TABLE tokens (
    id           INTEGER PRIMARY KEY,
    consumer_id  INTEGER NOT NULL REFERENCES consumers(id) ON DELETE CASCADE,
    environment  TEXT    NOT NULL CHECK (environment IN ('pruebas', 'produccion')),
    -- SHA-256 of the whole token string; the token itself is never stored.
    hash         BLOB    NOT NULL UNIQUE,
    -- the first characters, safe to show, to recognise a token in lists and logs
    display_prefix TEXT  NOT NULL,
    label        TEXT    NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER
);
CREATE INDEX tokens_by_consumer ON tokens (consumer_id, environment);

-- Every change that the data plane must see bumps this log; gateway nodes poll
-- its highest id (cheap) and reload their snapshots when it moves. Triggers
-- make it catch every writer, including a CLI running beside the server.
CREATE TABLE catalog_changes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
    subject     TEXT    NOT NULL
);

CREATE TRIGGER entities_changed_i AFTER INSERT ON entities BEGIN INSERT INTO catalog_changes (subject) VALUES ('entities'); END;
CREATE TRIGGER entities_changed_u AFTER UPDATE ON entities BEGIN INSERT INTO catalog_changes (subject) VALUES ('entities'); END;
CREATE TRIGGER entities_changed_d AFTER DELETE ON entities BEGIN INSERT INTO catalog_changes (subject) VALUES ('entities'); END;
CREATE TRIGGER services_changed_i AFTER INSERT ON services BEGIN INSERT INTO catalog_changes (subject) VALUES ('services'); END;
CREATE TRIGGER services_changed_u AFTER UPDATE ON services BEGIN INSERT INTO catalog_changes (subject) VALUES ('services'); END;
CREATE TRIGGER services_changed_d AFTER DELETE ON services BEGIN INSERT INTO catalog_changes (subject) VALUES ('services'); END;
CREATE TRIGGER senv_changed_i AFTER INSERT ON service_environments BEGIN INSERT INTO catalog_changes (subject) VALUES ('service_environments'); END;
CREATE TRIGGER senv_changed_u AFTER UPDATE ON service_environments BEGIN INSERT INTO catalog_changes (subject) VALUES ('service_environments'); END;
CREATE TRIGGER senv_changed_d AFTER DELETE ON service_environments BEGIN INSERT INTO catalog_changes (subject) VALUES ('service_environments'); END;
CREATE TRIGGER upstreams_changed_i AFTER INSERT ON upstreams BEGIN INSERT INTO catalog_changes (subject) VALUES ('upstreams'); END;
CREATE TRIGGER upstreams_changed_u AFTER UPDATE ON upstreams BEGIN INSERT INTO catalog_changes (subject) VALUES ('upstreams'); END;
CREATE TRIGGER upstreams_changed_d AFTER DELETE ON upstreams BEGIN INSERT INTO catalog_changes (subject) VALUES ('upstreams'); END;
CREATE TRIGGER consumers_changed_i AFTER INSERT ON consumers BEGIN INSERT INTO catalog_changes (subject) VALUES ('consumers'); END;
CREATE TRIGGER consumers_changed_u AFTER UPDATE ON consumers BEGIN INSERT INTO catalog_changes (subject) VALUES ('consumers'); END;
CREATE TRIGGER consumers_changed_d AFTER DELETE ON consumers BEGIN INSERT INTO catalog_changes (subject) VALUES ('consumers'); END;
CREATE TRIGGER grants_changed_i AFTER INSERT ON grants BEGIN INSERT INTO catalog_changes (subject) VALUES ('grants'); END;
CREATE TRIGGER grants_changed_u AFTER UPDATE ON grants BEGIN INSERT INTO catalog_changes (subject) VALUES ('grants'); END;
CREATE TRIGGER grants_changed_d AFTER DELETE ON grants BEGIN INSERT INTO catalog_changes (subject) VALUES ('grants'); END;
CREATE TRIGGER tokens_changed_i AFTER INSERT ON tokens BEGIN INSERT INTO catalog_changes (subject) VALUES ('tokens'); END;
-- last_used_at bookkeeping must not invalidate every cache, so only the
-- columns that decide authentication count as a change.
CREATE TRIGGER tokens_changed_u AFTER UPDATE OF consumer_id, environment, hash, expires_at, revoked_at ON tokens
    BEGIN INSERT INTO catalog_changes (subject) VALUES ('tokens'); END;
CREATE TRIGGER tokens_changed_d AFTER DELETE ON tokens BEGIN INSERT INTO catalog_changes (subject) VALUES ('tokens'); END;
