//! SQLite statements of endpoint signing keys: see [`super::super::postgres`]'s `keys` for each contract.

/// See [`super::super::postgres::ROTATE_KEY`], as a script in the adapter's one transaction (SQLite's write
/// lock serializes rotations). Each `id IN (…)` subquery is uncorrelated, so it is evaluated once, before its
/// UPDATE changes the rows it ranks: first the keys beyond the newest $8 − 1 end now, then the others get the
/// end of the grace period unless they end sooner, then expired keys go, then the new key is inserted.
pub const ROTATE_KEY: &str = "\
UPDATE webhooks_dispatch_endpoint_keys SET expires_at = $6
WHERE id IN (SELECT k.id FROM webhooks_dispatch_endpoint_keys AS k
             JOIN webhooks_dispatch_endpoints AS e ON e.id = k.endpoint_id AND e.deleted_at IS NULL
             WHERE k.endpoint_id = $1 AND (k.expires_at IS NULL OR k.expires_at > $6)
             ORDER BY k.created_at DESC, k.id DESC LIMIT -1 OFFSET $8 - 1);
UPDATE webhooks_dispatch_endpoint_keys SET expires_at = min(COALESCE(expires_at, $7), $7)
WHERE id IN (SELECT k.id FROM webhooks_dispatch_endpoint_keys AS k
             JOIN webhooks_dispatch_endpoints AS e ON e.id = k.endpoint_id AND e.deleted_at IS NULL
             WHERE k.endpoint_id = $1 AND (k.expires_at IS NULL OR k.expires_at > $6));
DELETE FROM webhooks_dispatch_endpoint_keys WHERE endpoint_id = $1 AND expires_at <= $6;
INSERT INTO webhooks_dispatch_endpoint_keys (id, endpoint_id, algorithm, secret, public_key, created_at, expires_at)
SELECT $2, id, $3, $4, $5, $6, NULL FROM webhooks_dispatch_endpoints WHERE id = $1 AND deleted_at IS NULL;
SELECT id FROM webhooks_dispatch_endpoint_keys WHERE id = $2";

/// See [`super::super::postgres::EXPIRE_PREVIOUS_KEYS`]; `changes()` counts the UPDATE's rows.
pub const EXPIRE_PREVIOUS_KEYS: &str = "\
UPDATE webhooks_dispatch_endpoint_keys SET expires_at = $2
WHERE endpoint_id = $1 AND expires_at > $2
  AND EXISTS (SELECT 1 FROM webhooks_dispatch_endpoints WHERE id = $1 AND deleted_at IS NULL);
SELECT id, changes() FROM webhooks_dispatch_endpoints WHERE id = $1 AND deleted_at IS NULL";

/// See [`super::super::postgres::SELECT_ENDPOINT_KEYS`].
pub const SELECT_ENDPOINT_KEYS: &str = "\
SELECT k.id, k.algorithm, k.public_key, k.created_at, k.expires_at
FROM webhooks_dispatch_endpoints AS e
JOIN webhooks_dispatch_endpoint_keys AS k ON k.endpoint_id = e.id
WHERE e.id = $1 AND e.deleted_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $2)
ORDER BY k.created_at DESC, k.id DESC";

/// See [`super::super::postgres::SELECT_OWNER_KEYS`].
pub const SELECT_OWNER_KEYS: &str = "\
SELECT e.id, k.id, k.algorithm, k.public_key, k.created_at, k.expires_at
FROM webhooks_dispatch_endpoints AS e
JOIN webhooks_dispatch_endpoint_keys AS k ON k.endpoint_id = e.id
WHERE e.owner_id = $1 AND e.deleted_at IS NULL AND k.algorithm = 'ed25519'
  AND (k.expires_at IS NULL OR k.expires_at > $2)
ORDER BY e.id, k.created_at DESC, k.id DESC";

/// See [`super::super::postgres::SELECT_KEYS_TO_REKEY`].
pub const SELECT_KEYS_TO_REKEY: &str = "\
SELECT id, secret FROM webhooks_dispatch_endpoint_keys WHERE id > $1 ORDER BY id LIMIT $2";

/// See [`super::super::postgres::UPDATE_KEY_SECRETS`].
pub const UPDATE_KEY_SECRETS: &str = "\
WITH input AS (
    SELECT value ->> 0 AS id, value ->> 1 AS old, value ->> 2 AS new FROM json_each($zip_1_2_3)
)
UPDATE webhooks_dispatch_endpoint_keys SET secret = input.new
FROM input
WHERE webhooks_dispatch_endpoint_keys.id = input.id AND webhooks_dispatch_endpoint_keys.secret = input.old
RETURNING webhooks_dispatch_endpoint_keys.id";
