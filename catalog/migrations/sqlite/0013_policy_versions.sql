-- Every policy ever applied, and which one is in force. Versions are never
-- changed or deleted: a rollback applies an old body as a new version.
CREATE TABLE policy_versions (
    id INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    author TEXT NOT NULL,
    comment TEXT NOT NULL,
    -- startup, file, admin or rollback
    source TEXT NOT NULL,
    -- for a rollback, the version whose body it restored
    restores INTEGER REFERENCES policy_versions(id),
    created_at_ms INTEGER NOT NULL
);

-- One row: the version every node applies. Nodes watch it through the
-- catalog change feed (the trigger below), so a change made on one node is
-- in force on all of them as soon as they reload.
CREATE TABLE policy_current (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    version_id INTEGER NOT NULL REFERENCES policy_versions(id),
    applied_at_ms INTEGER NOT NULL
);

CREATE TRIGGER policy_current_changed_i AFTER INSERT ON policy_current BEGIN INSERT INTO catalog_changes (subject) VALUES ('policy'); END;
CREATE TRIGGER policy_current_changed_u AFTER UPDATE ON policy_current BEGIN INSERT INTO catalog_changes (subject) VALUES ('policy'); END;
