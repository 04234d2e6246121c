//! Every statement the core runs on SQLite, in one place (the embedded, single-process engine).
//!
//! Same contract per statement as [`super::postgres`] (parameters, result columns), in SQLite's dialect:
//! timestamps are INTEGER Unix microseconds, arrays are bound as JSON text and unnested with `json_each`,
//! booleans come back as 0/1. SQLite has neither data-modifying CTEs nor `FOR UPDATE`, so some statements are
//! short scripts; the adapter runs each script in one transaction and returns the rows of every statement
//! that yields rows. Writers are serialized by SQLite itself, which is what makes claims exclusive here —
//! and why this engine serves one process.

/// Creates the table that records applied migrations; `applied_at` in Unix microseconds like every other
/// timestamp here (from `julianday`, which every SQLite has, to the millisecond).
pub const CREATE_MIGRATIONS_TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS webhooks_dispatch_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))
);
"#;

/// See [`super::postgres::SELECT_MIGRATIONS`].
pub const SELECT_MIGRATIONS: &str = "SELECT version FROM webhooks_dispatch_migrations ORDER BY version";

/// The numbered migrations (files under `store/migrations/sqlite/`), oldest first.
pub const MIGRATIONS: &[super::Migration] = super::migrations::SQLITE;

/// See [`super::postgres::INSERT_ENDPOINT`].
pub const INSERT_ENDPOINT: &str = "\
INSERT INTO webhooks_dispatch_endpoints (id, owner_id, url, secret, event_types, created_at)
VALUES ($1, $2, $3, $4, $5, $6)";

/// See [`super::postgres::SELECT_ENDPOINT`].
pub const SELECT_ENDPOINT: &str = "\
SELECT id, owner_id, url, event_types, created_at FROM webhooks_dispatch_endpoints WHERE id = $1";

/// See [`super::postgres::INSERT_MESSAGE`]. Insert (subscribed only; a repeated key does nothing), then report.
pub const INSERT_MESSAGE: &str = "\
INSERT INTO webhooks_dispatch_outbox
    (id, endpoint_id, event_type, payload, idempotency_key, next_attempt_at, created_at, updated_at)
SELECT $1, e.id, $3, $4, $5, $6, $6, $6
FROM webhooks_dispatch_endpoints AS e
WHERE e.id = $2
  AND (e.event_types = '[]' OR EXISTS (SELECT 1 FROM json_each(e.event_types) WHERE value = $3))
ON CONFLICT (endpoint_id, idempotency_key) DO NOTHING;
SELECT (SELECT count(*) FROM webhooks_dispatch_endpoints WHERE id = $2),
       (SELECT e.event_types = '[]' OR EXISTS (SELECT 1 FROM json_each(e.event_types) WHERE value = $3)
        FROM webhooks_dispatch_endpoints AS e WHERE e.id = $2),
       (SELECT id FROM webhooks_dispatch_outbox WHERE id = $1)";

/// See [`super::postgres::INSERT_MESSAGES`]. All or nothing: insert only if every message is subscribed and
/// no key is held by a different message.
pub const INSERT_MESSAGES: &str = "\
WITH input AS (
    SELECT i.key AS ord, i.value AS id, e.value AS endpoint_id, t.value AS event_type, p.value AS payload,
           k.value AS idempotency_key
    FROM json_each($1) AS i
    JOIN json_each($2) AS e ON e.key = i.key
    JOIN json_each($3) AS t ON t.key = i.key
    JOIN json_each($4) AS p ON p.key = i.key
    JOIN json_each($5) AS k ON k.key = i.key
), checked AS (
    SELECT input.*, (ep.id IS NOT NULL
           AND (ep.event_types = '[]'
                OR EXISTS (SELECT 1 FROM json_each(ep.event_types) WHERE value = input.event_type))) AS subscribed,
           EXISTS (SELECT 1 FROM webhooks_dispatch_outbox AS x
                   WHERE x.endpoint_id = input.endpoint_id AND x.idempotency_key = input.idempotency_key
                     AND (x.event_type <> input.event_type OR x.payload <> input.payload)) AS conflicting
    FROM input LEFT JOIN webhooks_dispatch_endpoints AS ep ON ep.id = input.endpoint_id
)
INSERT INTO webhooks_dispatch_outbox
    (id, endpoint_id, event_type, payload, idempotency_key, next_attempt_at, created_at, updated_at)
SELECT id, endpoint_id, event_type, payload, idempotency_key, $6, $6, $6
FROM checked
WHERE (SELECT min(subscribed AND NOT conflicting) FROM checked) = 1
ORDER BY ord
ON CONFLICT (endpoint_id, idempotency_key) DO NOTHING;
WITH input AS (
    SELECT i.key AS ord, i.value AS id, e.value AS endpoint_id, t.value AS event_type, p.value AS payload,
           k.value AS idempotency_key
    FROM json_each($1) AS i
    JOIN json_each($2) AS e ON e.key = i.key
    JOIN json_each($3) AS t ON t.key = i.key
    JOIN json_each($4) AS p ON p.key = i.key
    JOIN json_each($5) AS k ON k.key = i.key
)
SELECT input.ord,
       ep.id IS NOT NULL,
       ep.id IS NOT NULL AND (ep.event_types = '[]'
           OR EXISTS (SELECT 1 FROM json_each(ep.event_types) WHERE value = input.event_type)),
       COALESCE(mine.id, keyed.id),
       mine.id IS NOT NULL,
       CASE WHEN mine.id IS NOT NULL THEN 1
            WHEN keyed.id IS NOT NULL THEN keyed.event_type = input.event_type AND keyed.payload = input.payload
            ELSE 1 END
FROM input
LEFT JOIN webhooks_dispatch_endpoints AS ep ON ep.id = input.endpoint_id
LEFT JOIN webhooks_dispatch_outbox AS mine ON mine.id = input.id
LEFT JOIN webhooks_dispatch_outbox AS keyed
    ON mine.id IS NULL AND keyed.endpoint_id = input.endpoint_id AND keyed.idempotency_key = input.idempotency_key
ORDER BY input.ord";

/// See [`super::postgres::SELECT_MESSAGE_BY_KEY`].
pub const SELECT_MESSAGE_BY_KEY: &str = "\
SELECT id, event_type, payload FROM webhooks_dispatch_outbox WHERE endpoint_id = $1 AND idempotency_key = $2";

/// See [`super::postgres::SELECT_MESSAGE`].
pub const SELECT_MESSAGE: &str = "\
SELECT id, endpoint_id, event_type, status, attempts, next_attempt_at, created_at, updated_at
FROM webhooks_dispatch_outbox WHERE id = $1";

/// See [`super::postgres::CLAIM_DUE`]. Stamp the lease, then read back exactly the rows with this token.
pub const CLAIM_DUE: &str = "\
WITH busy AS (
    SELECT e.value AS endpoint_id, n.value AS held
    FROM json_each($5) AS e JOIN json_each($7) AS n ON n.key = e.key
)
UPDATE webhooks_dispatch_outbox SET lease_token = $1, lease_expires_at = $2
WHERE id IN (
    SELECT id FROM (
        SELECT c.id, c.next_attempt_at,
               row_number() OVER (PARTITION BY c.endpoint_id ORDER BY c.next_attempt_at, c.id)
                   + COALESCE(busy.held, 0) AS slot
        FROM (
            SELECT id, endpoint_id, next_attempt_at FROM webhooks_dispatch_outbox
            WHERE status = 'pending' AND next_attempt_at <= $3
              AND (lease_expires_at IS NULL OR lease_expires_at <= $3)
              AND endpoint_id NOT IN (SELECT endpoint_id FROM busy WHERE held >= $6)
            ORDER BY next_attempt_at, id
            LIMIT $4 * 4
        ) AS c LEFT JOIN busy ON busy.endpoint_id = c.endpoint_id
    ) AS ranked
    WHERE slot <= $6
    ORDER BY next_attempt_at, id
    LIMIT $4
);
SELECT o.id, o.endpoint_id, o.payload, o.attempts, e.url, e.secret
FROM webhooks_dispatch_outbox AS o JOIN webhooks_dispatch_endpoints AS e ON e.id = o.endpoint_id
WHERE o.lease_token = $1";

/// See [`super::postgres::COMPLETE_ATTEMPTS`]. Insert the attempts of rows whose lease still matches (their
/// ids are the result), move those rows on, then back off unreachable endpoints' other waiting messages; all
/// in the adapter's one transaction. (The third statement runs after the second has cleared the leases of
/// the recorded rows; a recorded retry's own time is the backoff time, so pushing it again changes nothing.)
pub const COMPLETE_ATTEMPTS: &str = "\
WITH input AS (
    SELECT i.value AS id, t.value AS lease_token, o.value AS outcome, a.value AS attempted_at,
           s.value AS status_code, l.value AS latency_ms, n.value AS next_attempt_at, e.value AS error
    FROM json_each($1) AS i
    JOIN json_each($2) AS t ON t.key = i.key
    JOIN json_each($3) AS o ON o.key = i.key
    JOIN json_each($4) AS a ON a.key = i.key
    JOIN json_each($5) AS s ON s.key = i.key
    JOIN json_each($6) AS l ON l.key = i.key
    JOIN json_each($7) AS n ON n.key = i.key
    JOIN json_each($8) AS e ON e.key = i.key
)
INSERT INTO webhooks_dispatch_attempts
    (message_id, attempt_no, attempted_at, status_code, outcome, latency_ms, next_attempt_at, error)
SELECT input.id, m.attempts + 1, input.attempted_at, input.status_code, input.outcome, input.latency_ms,
       input.next_attempt_at, input.error
FROM input JOIN webhooks_dispatch_outbox AS m
    ON m.id = input.id AND m.lease_token = input.lease_token AND m.status = 'pending'
RETURNING message_id;
WITH input AS (
    SELECT i.value AS id, t.value AS lease_token, o.value AS outcome, a.value AS attempted_at,
           n.value AS next_attempt_at
    FROM json_each($1) AS i
    JOIN json_each($2) AS t ON t.key = i.key
    JOIN json_each($3) AS o ON o.key = i.key
    JOIN json_each($4) AS a ON a.key = i.key
    JOIN json_each($7) AS n ON n.key = i.key
)
UPDATE webhooks_dispatch_outbox
SET status = CASE input.outcome WHEN 'retrying' THEN 'pending' ELSE input.outcome END,
    attempts = attempts + 1,
    next_attempt_at = COALESCE(input.next_attempt_at, webhooks_dispatch_outbox.next_attempt_at),
    lease_token = NULL, lease_expires_at = NULL, updated_at = input.attempted_at
FROM input
WHERE webhooks_dispatch_outbox.id = input.id
  AND webhooks_dispatch_outbox.lease_token = input.lease_token
  AND webhooks_dispatch_outbox.status = 'pending';
WITH input AS (
    SELECT i.value AS id, o.value AS outcome, s.value AS status_code, n.value AS next_attempt_at
    FROM json_each($1) AS i
    JOIN json_each($3) AS o ON o.key = i.key
    JOIN json_each($5) AS s ON s.key = i.key
    JOIN json_each($7) AS n ON n.key = i.key
), unreachable AS (
    SELECT m.endpoint_id, max(input.next_attempt_at) AS until
    FROM input JOIN webhooks_dispatch_outbox AS m ON m.id = input.id
    WHERE input.outcome = 'retrying' AND input.status_code IS NULL
    GROUP BY m.endpoint_id
)
UPDATE webhooks_dispatch_outbox SET next_attempt_at = unreachable.until
FROM unreachable
WHERE webhooks_dispatch_outbox.endpoint_id = unreachable.endpoint_id
  AND webhooks_dispatch_outbox.status = 'pending' AND webhooks_dispatch_outbox.lease_token IS NULL
  AND webhooks_dispatch_outbox.next_attempt_at < unreachable.until";

/// See [`super::postgres::RELEASE_CLAIMS`].
pub const RELEASE_CLAIMS: &str = "\
UPDATE webhooks_dispatch_outbox SET lease_token = NULL, lease_expires_at = NULL
WHERE status = 'pending' AND EXISTS (
    SELECT 1 FROM json_each($1) AS i JOIN json_each($2) AS t ON t.key = i.key
    WHERE i.value = webhooks_dispatch_outbox.id AND t.value = webhooks_dispatch_outbox.lease_token)
RETURNING id";

/// See [`super::postgres::NEXT_DUE`].
pub const NEXT_DUE: &str = "\
SELECT min(next_attempt_at) FROM webhooks_dispatch_outbox WHERE status = 'pending' AND next_attempt_at > $1";

/// See [`super::postgres::SELECT_ATTEMPTS`].
pub const SELECT_ATTEMPTS: &str = "\
SELECT message_id, attempt_no, attempted_at, status_code, outcome, latency_ms, next_attempt_at, error
FROM webhooks_dispatch_attempts WHERE message_id = $1 ORDER BY attempt_no";

/// See [`super::postgres::QUEUE_STATS`].
pub const QUEUE_STATS: &str = "\
SELECT count(*), min(next_attempt_at) FROM webhooks_dispatch_outbox
WHERE status = 'pending' AND next_attempt_at <= $1 AND (lease_expires_at IS NULL OR lease_expires_at <= $1)";

/// Settings of every connection the adapter opens: write-ahead logging (readers never block the writer),
/// full fsync at commit (durable like PostgreSQL's defaults), and enforced foreign keys.
pub const CONNECTION_SETUP: &str =
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;";

/// The SQLite statement set. No NOTIFY: workers share the process with dispatchers and are woken in memory.
pub const STATEMENTS: super::Statements = super::Statements {
    create_migrations_table: CREATE_MIGRATIONS_TABLE,
    select_migrations: SELECT_MIGRATIONS,
    migrations: MIGRATIONS,
    insert_endpoint: INSERT_ENDPOINT,
    select_endpoint: SELECT_ENDPOINT,
    insert_message: INSERT_MESSAGE,
    insert_messages: INSERT_MESSAGES,
    select_message_by_key: SELECT_MESSAGE_BY_KEY,
    select_message: SELECT_MESSAGE,
    claim_due: CLAIM_DUE,
    complete_attempts: COMPLETE_ATTEMPTS,
    release_claims: RELEASE_CLAIMS,
    next_due: NEXT_DUE,
    notify_due: None,
    listen_due: None,
    connection_setup: Some(CONNECTION_SETUP),
    select_attempts: SELECT_ATTEMPTS,
    queue_stats: QUEUE_STATS,
};
