-- Every policy ever applied, and which one is in force. Versions are never
-- changed or deleted: a rollback applies an old body as a new version.
CREATE TABLE policy_versions (
    id BIGSERIAL PRIMARY KEY,
    body TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    author TEXT NOT NULL,
    comment TEXT NOT NULL,
    -- startup, file, admin or rollback
    source TEXT NOT NULL,
    -- for a rollback, the version whose body it restored
    restores BIGINT REFERENCES policy_versions(id),
    created_at_ms BIGINT NOT NULL
);

-- One row: the version every node applies. Nodes watch it through the
-- catalog change feed, so a change made on one node is in force on all of
-- them as soon as they reload.
CREATE TABLE policy_current (
    singleton BIGINT PRIMARY KEY CHECK (singleton = 1),
    version_id BIGINT NOT NULL REFERENCES policy_versions(id),
    applied_at_ms BIGINT NOT NULL
);

-- The catalog change trigger (0001) also notifies every node at commit.
CREATE TRIGGER policy_current_changed AFTER INSERT OR UPDATE ON policy_current
    FOR EACH ROW EXECUTE FUNCTION chasqui_catalog_changed();
