-- See the PostgreSQL migration of the same name.
CREATE TABLE webhooks_dispatch_endpoint_keys (
    id          TEXT    PRIMARY KEY,
    endpoint_id TEXT    NOT NULL REFERENCES webhooks_dispatch_endpoints (id),
    algorithm   TEXT    NOT NULL CHECK (algorithm IN ('hmac-sha256', 'ed25519')),
    secret      TEXT    NOT NULL,
    public_key  TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER
);
CREATE INDEX webhooks_dispatch_endpoint_keys_endpoint_idx
    ON webhooks_dispatch_endpoint_keys (endpoint_id, created_at, id);

INSERT INTO webhooks_dispatch_endpoint_keys (id, endpoint_id, algorithm, secret, public_key, created_at, expires_at)
SELECT 'key_' || id, id, 'hmac-sha256', secret, NULL, created_at, NULL FROM webhooks_dispatch_endpoints;
ALTER TABLE webhooks_dispatch_endpoints DROP COLUMN secret;
