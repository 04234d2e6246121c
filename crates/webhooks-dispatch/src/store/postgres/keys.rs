//! PostgreSQL statements of endpoint signing keys (see [`super`] for the conventions). No statement here
//! returns a key's secret except the rekey scan, which reads them to reseal them.

/// $1 endpoint id, $2 new key id, $3 algorithm, $4 its stored secret, $5 its public key (NULL for HMAC),
/// $6 now, $7 when the previous keys stop signing, $8 most unexpired keys → the new key's id (no row: unknown
/// or deleted endpoint).
///
/// The endpoint row is locked first, so two rotations of one endpoint take turns and each sees the other's
/// key. The previous unexpired keys get the end of the grace period unless they already end sooner; those
/// beyond the newest $8 − 1 end now, so with the new one at most $8 sign. Keys already expired are
/// deleted: their secrets have no use left. (The CTEs see one snapshot, so the new key is in neither set.)
pub const ROTATE_KEY: &str = "\
WITH ep AS (
    SELECT id FROM webhooks_dispatch_endpoints WHERE id = $1::text AND deleted_at IS NULL FOR UPDATE
), live AS (
    SELECT k.id, row_number() OVER (ORDER BY k.created_at DESC, k.id DESC) AS newness
    FROM webhooks_dispatch_endpoint_keys AS k
    WHERE k.endpoint_id = $1::text AND EXISTS (SELECT 1 FROM ep)
      AND (k.expires_at IS NULL OR k.expires_at > $6::timestamptz)
), ended AS (
    UPDATE webhooks_dispatch_endpoint_keys AS k
    SET expires_at = CASE WHEN l.newness >= $8::int8 THEN $6::timestamptz
                          ELSE LEAST(COALESCE(k.expires_at, $7::timestamptz), $7::timestamptz) END
    FROM live AS l WHERE k.id = l.id
    RETURNING k.id
), purged AS (
    DELETE FROM webhooks_dispatch_endpoint_keys AS k
    WHERE k.endpoint_id = $1::text AND k.expires_at <= $6::timestamptz AND EXISTS (SELECT 1 FROM ep)
    RETURNING k.id
)
INSERT INTO webhooks_dispatch_endpoint_keys (id, endpoint_id, algorithm, secret, public_key, created_at, expires_at)
SELECT $2::text, ep.id, $3::text, $4::text, $5::text, $6::timestamptz, NULL FROM ep
RETURNING id";

/// $1 endpoint id, $2 now → endpoint id, how many previous keys this ended (no row: unknown or deleted
/// endpoint). The current key is the one without an expiry, so it is never touched.
pub const EXPIRE_PREVIOUS_KEYS: &str = "\
WITH ep AS (
    SELECT id FROM webhooks_dispatch_endpoints WHERE id = $1::text AND deleted_at IS NULL FOR UPDATE
), ended AS (
    UPDATE webhooks_dispatch_endpoint_keys AS k SET expires_at = $2::timestamptz
    WHERE k.endpoint_id = $1::text AND k.expires_at > $2::timestamptz AND EXISTS (SELECT 1 FROM ep)
    RETURNING k.id
)
SELECT id, (SELECT count(*) FROM ended)::int8 FROM ep";

/// The key columns every key read returns, in the order `key_from_row` decodes them.
macro_rules! key_columns {
    () => {
        "k.id, k.algorithm, k.public_key, k.created_at, k.expires_at"
    };
}

/// $1 endpoint id, $2 now → `key_columns!` of its unexpired keys, newest first (none: unknown or deleted).
pub const SELECT_ENDPOINT_KEYS: &str = concat!(
    "SELECT ",
    key_columns!(),
    " FROM webhooks_dispatch_endpoints AS e
JOIN webhooks_dispatch_endpoint_keys AS k ON k.endpoint_id = e.id
WHERE e.id = $1::text AND e.deleted_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $2::timestamptz)
ORDER BY k.created_at DESC, k.id DESC"
);

/// $1 owner id, $2 now → endpoint id, then `key_columns!`, of every unexpired ed25519 key of the owner's
/// endpoints, by endpoint, newest first (the owner index, then each endpoint's keys index).
pub const SELECT_OWNER_KEYS: &str = concat!(
    "SELECT e.id, ",
    key_columns!(),
    " FROM webhooks_dispatch_endpoints AS e
JOIN webhooks_dispatch_endpoint_keys AS k ON k.endpoint_id = e.id
WHERE e.owner_id = $1::text AND e.deleted_at IS NULL AND k.algorithm = 'ed25519'
  AND (k.expires_at IS NULL OR k.expires_at > $2::timestamptz)
ORDER BY e.id, k.created_at DESC, k.id DESC"
);

/// $1 the last key id of the previous batch ('' for the first), $2 how many → id, stored secret, in id order
/// (a range of the primary key, so a run over every key costs one pass whatever its size).
pub const SELECT_KEYS_TO_REKEY: &str = "\
SELECT id, secret FROM webhooks_dispatch_endpoint_keys WHERE id > $1::text ORDER BY id LIMIT $2::int8";

/// Parallel arrays $1 key ids, $2 the secrets read, $3 the resealed secrets → id of each key replaced. A key
/// whose secret changed since it was read is left alone (compare and set), so a rekey never undoes a
/// concurrent write.
pub const UPDATE_KEY_SECRETS: &str = "\
UPDATE webhooks_dispatch_endpoint_keys AS k SET secret = u.new
FROM unnest($1::text[], $2::text[], $3::text[]) AS u(id, old, new)
WHERE k.id = u.id AND k.secret = u.old
RETURNING k.id";
