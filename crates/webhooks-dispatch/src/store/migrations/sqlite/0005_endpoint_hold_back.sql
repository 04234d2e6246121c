-- See the PostgreSQL migration of the same name (SQLite adds one column per statement).
ALTER TABLE webhooks_dispatch_endpoints ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE webhooks_dispatch_endpoints ADD COLUMN blocked_until INTEGER;

CREATE INDEX webhooks_dispatch_endpoints_held_back_idx ON webhooks_dispatch_endpoints (id)
    WHERE status = 'disabled' OR blocked_until IS NOT NULL;
