-- What an operator may change on an endpoint besides its URL and event types: a description, string
-- metadata (a JSON object), and custom headers sent with every attempt (a JSON object whose values are
-- secrets: never read back, never logged).
ALTER TABLE webhooks_dispatch_endpoints
    ADD COLUMN description text NOT NULL DEFAULT '',
    ADD COLUMN metadata text NOT NULL DEFAULT '{}',
    ADD COLUMN headers text NOT NULL DEFAULT '{}',
    -- Soft delete: a deleted endpoint behaves as unknown, but its messages and attempts stay readable.
    ADD COLUMN deleted_at timestamptz,
    -- Automatic disabling, decided from these alone: the first failed attempt since the last success (NULL
    -- while the endpoint is healthy), and the last time one of its messages went dead.
    ADD COLUMN failing_since timestamptz,
    ADD COLUMN last_dead_at timestamptz;

-- Why a dead message ended without its attempts deciding it: 'endpoint_deleted'. NULL: its last attempt
-- decided (exhausted, or a permanent failure).
ALTER TABLE webhooks_dispatch_outbox
    ADD COLUMN dead_reason text CHECK (dead_reason IN ('endpoint_deleted'));

-- "What did we send to this endpoint?", newest first, without reading other endpoints' history.
CREATE INDEX webhooks_dispatch_outbox_endpoint_key_idx ON webhooks_dispatch_outbox (endpoint_id, id);
