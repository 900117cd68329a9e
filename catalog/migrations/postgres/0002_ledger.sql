-- Twin of sqlite/0002_ledger.sql, kept so that both directories number their
-- migrations alike. The audit ledger is per node (hash-chained and signed by
-- the node's key, like X-Road's per-server message log): in a PostgreSQL
-- cluster each node keeps it in its own SQLite file, `<data_dir>/ledger.db`,
-- so nothing is created here.
SELECT 1;
