-- Signing keys over their life: an endpoint signs with every key it has that has not expired, newest first,
-- so a rotation overlaps the old secret and the new for a grace period. `secret` is the key's secret text,
-- sealed by the dispatcher's key ring (`wdenc1.` prefix) or, for rows written before encryption at rest,
-- plaintext until a rekey seals it; `public_key` is the ed25519 public key (`whpk_`), published to receivers.
-- `expires_at` is NULL for the current key and set to the end of the grace period for the previous ones.
CREATE TABLE webhooks_dispatch_endpoint_keys (
    id          text        PRIMARY KEY,
    endpoint_id text        NOT NULL REFERENCES webhooks_dispatch_endpoints (id),
    algorithm   text        NOT NULL CHECK (algorithm IN ('hmac-sha256', 'ed25519')),
    secret      text        NOT NULL,
    public_key  text,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz
);
-- Claims read each claimed endpoint's keys newest first, and rotations rank them the same way.
CREATE INDEX webhooks_dispatch_endpoint_keys_endpoint_idx
    ON webhooks_dispatch_endpoint_keys (endpoint_id, created_at, id);

-- Every existing endpoint's one secret becomes its current key (still plaintext: a migration holds no key
-- ring; `rekey` seals it), and leaves the endpoint row, which is read far more widely than keys need.
INSERT INTO webhooks_dispatch_endpoint_keys (id, endpoint_id, algorithm, secret, public_key, created_at, expires_at)
SELECT 'key_' || id, id, 'hmac-sha256', secret, NULL, created_at, NULL FROM webhooks_dispatch_endpoints;
ALTER TABLE webhooks_dispatch_endpoints DROP COLUMN secret;
