-- Key-value state of plugins whose policy asks for it to be durable (PPE's
-- single-payment claims): written through before the plugin's call returns,
-- loaded again when the plugin is loaded (start, policy reload).
CREATE TABLE plugin_kv (
    plugin          TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    value           BLOB    NOT NULL,
    -- Unix milliseconds; NULL: no expiry
    expires_at_ms   INTEGER,
    PRIMARY KEY (plugin, key)
);
