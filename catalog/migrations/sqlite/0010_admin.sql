-- The onboarding domain behind the admin API: who may administer (principals
-- with bearer admin tokens), the entities' security contact points, the
-- services' metadata sheets and OpenAPI documents, uploaded documents (the
-- adhesion agreements), and the two procedures of AGETIC's document 000 as
-- state machines with their history.
--
-- Plain SQL that also runs on PostgreSQL: INTEGER, TEXT and CHECK only, times
-- in Unix seconds. Binary content (PDFs) is kept as base64 TEXT and hashes as
-- lowercase hex, so no BLOB/BYTEA is needed.

-- A principal of the admin API. Each holds one bearer token (`chq_admin_...`),
-- stored only as the hex SHA-256 of the whole string. Operators (AGETIC) belong
-- to no entity; publishers and consumers act for exactly one.
CREATE TABLE admin_principals (
    id              INTEGER PRIMARY KEY,
    name            TEXT    NOT NULL,
    role            TEXT    NOT NULL CHECK (role IN ('operator', 'publisher', 'consumer')),
    entity_id       INTEGER REFERENCES entities(id),
    token_hash      TEXT    NOT NULL UNIQUE,
    display_prefix  TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    created_by      INTEGER REFERENCES admin_principals(id),
    revoked_at      INTEGER,
    CHECK ((role = 'operator' AND entity_id IS NULL) OR (role <> 'operator' AND entity_id IS NOT NULL))
);
CREATE INDEX admin_principals_by_entity ON admin_principals (entity_id);

-- The entity's security contact points (document 000, section 8). Where it
-- receives incident notifications is `entities.incident_webhook` (0004).
CREATE TABLE entity_security_contacts (
    id          INTEGER PRIMARY KEY,
    entity_id   INTEGER NOT NULL REFERENCES entities(id) ON DELETE CASCADE,
    full_name   TEXT    NOT NULL,
    role        TEXT    NOT NULL,
    email       TEXT    NOT NULL,
    phone       TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX entity_security_contacts_by_entity ON entity_security_contacts (entity_id);

-- Uploaded documents: adhesion agreements (PDF), checked by content and
-- stored with their SHA-256.
CREATE TABLE documents (
    id          INTEGER PRIMARY KEY,
    entity_id   INTEGER NOT NULL REFERENCES entities(id),
    kind        TEXT    NOT NULL CHECK (kind IN ('adhesion_agreement')),
    filename    TEXT    NOT NULL,
    media_type  TEXT    NOT NULL,
    size_bytes  INTEGER NOT NULL CHECK (size_bytes >= 0),
    sha256      TEXT    NOT NULL,
    content     TEXT    NOT NULL,
    uploaded_by INTEGER NOT NULL REFERENCES admin_principals(id),
    created_at  INTEGER NOT NULL
);
CREATE INDEX documents_by_entity ON documents (entity_id);

-- A service's metadata sheet ("ficha de metadatos") and its OpenAPI document.
CREATE TABLE service_sheets (
    service_id     INTEGER PRIMARY KEY REFERENCES services(id) ON DELETE CASCADE,
    data_provided  TEXT    NOT NULL DEFAULT '',
    legal_basis    TEXT    NOT NULL DEFAULT '',
    personal_data  INTEGER NOT NULL DEFAULT 0 CHECK (personal_data IN (0, 1)),
    coordinator    TEXT    NOT NULL DEFAULT '',
    version_notes  TEXT    NOT NULL DEFAULT '',
    openapi        TEXT,
    updated_at     INTEGER NOT NULL
);

-- The publish procedure of a service (4 steps). A service without a row here
-- (imported, demo) is in the state its `services.status` implies. The state
-- decides `services.status`, which the data plane routes by, in the same
-- transaction: draft and adhesion_received -> draft, environments_enabled ->
-- testing, published -> published, deprecated -> deprecated.
CREATE TABLE service_publications (
    service_id           INTEGER PRIMARY KEY REFERENCES services(id) ON DELETE CASCADE,
    state                TEXT    NOT NULL
                         CHECK (state IN ('draft', 'adhesion_received', 'environments_enabled', 'published', 'deprecated')),
    adhesion_document_id INTEGER REFERENCES documents(id),
    updated_at           INTEGER NOT NULL
);

-- The consume procedure (8 steps): a consumer system's request for a service.
-- Its transitions write the grants (which the data plane reads) in the same
-- transaction; the grants' triggers make every gateway reload.
CREATE TABLE access_requests (
    id                   INTEGER PRIMARY KEY,
    consumer_id          INTEGER NOT NULL REFERENCES consumers(id),
    service_id           INTEGER NOT NULL REFERENCES services(id),
    state                TEXT    NOT NULL
                         CHECK (state IN ('requested', 'test_enabled', 'integration_verified', 'adhesion_received',
                                          'production_enabled', 'rejected', 'suspended', 'revoked')),
    -- the state a suspended request returns to when reinstated
    suspended_from       TEXT,
    justification        TEXT    NOT NULL DEFAULT '',
    adhesion_document_id INTEGER REFERENCES documents(id),
    requested_by         INTEGER NOT NULL REFERENCES admin_principals(id),
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
);
-- At most one live request per consumer system and service.
CREATE UNIQUE INDEX access_requests_live ON access_requests (consumer_id, service_id)
    WHERE state NOT IN ('rejected', 'revoked');
CREATE INDEX access_requests_by_service ON access_requests (service_id);

-- Every transition of either procedure: who, when, from what to what, and
-- the document it rests on.
CREATE TABLE procedure_events (
    id           INTEGER PRIMARY KEY,
    procedure    TEXT    NOT NULL CHECK (procedure IN ('consume', 'publish')),
    -- access_requests.id for consume, services.id for publish
    subject_id   INTEGER NOT NULL,
    action       TEXT    NOT NULL,
    from_state   TEXT,
    to_state     TEXT    NOT NULL,
    principal_id INTEGER NOT NULL REFERENCES admin_principals(id),
    document_id  INTEGER REFERENCES documents(id),
    note         TEXT    NOT NULL DEFAULT '',
    at           INTEGER NOT NULL
);
CREATE INDEX procedure_events_by_subject ON procedure_events (procedure, subject_id, id);
