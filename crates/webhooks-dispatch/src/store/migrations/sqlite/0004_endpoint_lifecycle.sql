-- See the PostgreSQL migration of the same name (SQLite adds one column per statement).
ALTER TABLE webhooks_dispatch_endpoints ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE webhooks_dispatch_endpoints ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
ALTER TABLE webhooks_dispatch_endpoints ADD COLUMN headers TEXT NOT NULL DEFAULT '{}';
ALTER TABLE webhooks_dispatch_endpoints ADD COLUMN deleted_at INTEGER;
ALTER TABLE webhooks_dispatch_endpoints ADD COLUMN failing_since INTEGER;
ALTER TABLE webhooks_dispatch_endpoints ADD COLUMN last_dead_at INTEGER;

ALTER TABLE webhooks_dispatch_outbox
    ADD COLUMN dead_reason TEXT CHECK (dead_reason IN ('endpoint_deleted'));

CREATE INDEX webhooks_dispatch_outbox_endpoint_key_idx ON webhooks_dispatch_outbox (endpoint_id, id);
