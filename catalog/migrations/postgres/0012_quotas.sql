-- Quota usage per consumer system x service and period (issue 5). The
-- gateway counts in memory and writes the counters here in batches (every
-- second, and at shutdown); at start it loads the current periods back, so a
-- restart loses at most one flush interval of counting.
CREATE TABLE quota_usage (
    consumer_id     BIGINT  NOT NULL,
    service_id      BIGINT  NOT NULL,
    -- 'day' or 'month' (Bolivian time, UTC-4)
    period          TEXT    NOT NULL,
    -- Unix seconds of the period's start
    period_start    BIGINT  NOT NULL,
    used            BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    PRIMARY KEY (consumer_id, service_id, period, period_start)
);

-- A new or changed OpenAPI document changes what contract validation checks:
-- let gateways see it as a catalog change.
CREATE TRIGGER service_sheets_changed_iu AFTER INSERT OR UPDATE ON service_sheets
    FOR EACH ROW EXECUTE FUNCTION chasqui_catalog_changed();
