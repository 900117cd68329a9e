-- PostgreSQL twin of sqlite/0005_plugin_kv.sql: durable plugin state.
CREATE TABLE plugin_kv (
    plugin          TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    value           BYTEA   NOT NULL,
    expires_at_ms   BIGINT,
    PRIMARY KEY (plugin, key)
);
