//! Every statement the core runs on SQLite, in one place (the embedded, single-process engine).
//!
//! Same contract per statement as [`super::postgres`] (parameters, result columns), in SQLite's dialect:
//! timestamps are INTEGER Unix microseconds, arrays are bound as JSON text and unnested with `json_each`,
//! booleans come back as 0/1. A batch's parallel arrays are read through `$zip_a_b_…` (the adapter binds one
//! JSON array of rows `[a[i], b[i], …]`) with one `json_each` and `value ->> k`: SQLite joins one `json_each`
//! per array on the element index as nested scans, quadratic in the batch. SQLite has neither data-modifying
//! CTEs nor `FOR UPDATE`, so some statements are short scripts; the adapter runs each script in one
//! transaction and returns the rows of every statement that yields rows. Writers are serialized by SQLite
//! itself, which is what makes claims exclusive here — and why this engine serves one process.

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

/// See the macro of the same name in [`super::postgres`].
macro_rules! endpoint_columns {
    () => {
        "id, owner_id, url, event_types, created_at, status, disabled_reason, disabled_at, description, metadata, \
         headers"
    };
}

/// See [`super::postgres::INSERT_ENDPOINT`].
pub const INSERT_ENDPOINT: &str = "\
INSERT INTO webhooks_dispatch_endpoints
    (id, owner_id, url, event_types, created_at, description, metadata, headers)
VALUES ($1, $2, $3, $5, $6, $7, $8, $9);
INSERT INTO webhooks_dispatch_endpoint_keys (id, endpoint_id, algorithm, secret, public_key, created_at, expires_at)
VALUES ($4, $1, $10, $11, $12, $6, NULL)";

/// See [`super::postgres::SELECT_ENDPOINT`].
pub const SELECT_ENDPOINT: &str = concat!(
    "SELECT ",
    endpoint_columns!(),
    " FROM webhooks_dispatch_endpoints WHERE id = $1 AND deleted_at IS NULL"
);

/// See [`super::postgres::INSERT_MESSAGE`]. Insert (subscribed only; a repeated key does nothing), then report.
pub const INSERT_MESSAGE: &str = "\
INSERT INTO webhooks_dispatch_outbox
    (id, endpoint_id, event_type, payload, idempotency_key, next_attempt_at, created_at, updated_at)
SELECT $1, e.id, $3, $4, $5, $6, $6, $6
FROM webhooks_dispatch_endpoints AS e
WHERE e.id = $2 AND e.status = 'active'
  AND (e.event_types = '[]' OR EXISTS (SELECT 1 FROM json_each(e.event_types) WHERE value = $3))
ON CONFLICT (endpoint_id, idempotency_key) DO NOTHING;
SELECT (SELECT count(*) FROM webhooks_dispatch_endpoints WHERE id = $2 AND deleted_at IS NULL),
       (SELECT e.event_types = '[]' OR EXISTS (SELECT 1 FROM json_each(e.event_types) WHERE value = $3)
        FROM webhooks_dispatch_endpoints AS e WHERE e.id = $2 AND e.deleted_at IS NULL),
       (SELECT id FROM webhooks_dispatch_outbox WHERE id = $1),
       (SELECT e.status = 'active' FROM webhooks_dispatch_endpoints AS e WHERE e.id = $2 AND e.deleted_at IS NULL)";

/// See [`super::postgres::INSERT_MESSAGES`]. All or nothing: insert only if every message is subscribed and
/// no key is held by a different message. Each input row is read once, and checked with index lookups.
pub const INSERT_MESSAGES: &str = "\
WITH input AS (
    SELECT key AS ord, value ->> 0 AS id, value ->> 1 AS endpoint_id, value ->> 2 AS event_type,
           value ->> 3 AS payload, value ->> 4 AS idempotency_key
    FROM json_each($zip_1_2_3_4_5)
), checked AS (
    SELECT input.*, (ep.id IS NOT NULL
           AND (ep.event_types = '[]'
                OR EXISTS (SELECT 1 FROM json_each(ep.event_types) WHERE value = input.event_type))) AS subscribed,
           COALESCE(ep.status = 'active', 0) AS active,
           EXISTS (SELECT 1 FROM webhooks_dispatch_outbox AS x
                   WHERE x.endpoint_id = input.endpoint_id AND x.idempotency_key = input.idempotency_key
                     AND (x.event_type <> input.event_type OR x.payload <> input.payload)) AS conflicting
    FROM input
    LEFT JOIN webhooks_dispatch_endpoints AS ep ON ep.id = input.endpoint_id AND ep.deleted_at IS NULL
)
INSERT INTO webhooks_dispatch_outbox
    (id, endpoint_id, event_type, payload, idempotency_key, next_attempt_at, created_at, updated_at)
SELECT id, endpoint_id, event_type, payload, idempotency_key, $6, $6, $6
FROM checked
WHERE (SELECT min(subscribed AND active AND NOT conflicting) FROM checked) = 1
ORDER BY ord
ON CONFLICT (endpoint_id, idempotency_key) DO NOTHING;
WITH input AS (
    SELECT key AS ord, value ->> 0 AS id, value ->> 1 AS endpoint_id, value ->> 2 AS event_type,
           value ->> 3 AS payload, value ->> 4 AS idempotency_key
    FROM json_each($zip_1_2_3_4_5)
)
SELECT input.ord,
       ep.id IS NOT NULL,
       ep.id IS NOT NULL AND (ep.event_types = '[]'
           OR EXISTS (SELECT 1 FROM json_each(ep.event_types) WHERE value = input.event_type)),
       COALESCE(mine.id, keyed.id),
       mine.id IS NOT NULL,
       CASE WHEN mine.id IS NOT NULL THEN 1
            WHEN keyed.id IS NOT NULL THEN keyed.event_type = input.event_type AND keyed.payload = input.payload
            ELSE 1 END,
       COALESCE(ep.status = 'active', 0)
FROM input
LEFT JOIN webhooks_dispatch_endpoints AS ep ON ep.id = input.endpoint_id AND ep.deleted_at IS NULL
LEFT JOIN webhooks_dispatch_outbox AS mine ON mine.id = input.id
LEFT JOIN webhooks_dispatch_outbox AS keyed
    ON mine.id IS NULL AND keyed.endpoint_id = input.endpoint_id AND keyed.idempotency_key = input.idempotency_key
ORDER BY input.ord";

/// See [`super::postgres::SELECT_MESSAGE_BY_KEY`].
pub const SELECT_MESSAGE_BY_KEY: &str = "\
SELECT id, event_type, payload FROM webhooks_dispatch_outbox WHERE endpoint_id = $1 AND idempotency_key = $2";

/// See [`super::postgres::SELECT_MESSAGE`].
pub const SELECT_MESSAGE: &str = "\
SELECT id, endpoint_id, event_type, status, attempts, next_attempt_at, created_at, updated_at, event_id,
       dead_reason
FROM webhooks_dispatch_outbox WHERE id = $1";

/// See [`super::postgres::CLAIM_DUE`]: the same endpoint-driven plan, with recursive CTEs where PostgreSQL
/// uses lateral joins. A skip scan of `webhooks_dispatch_outbox_endpoint_due_idx` lists the endpoints with
/// pending work (one probe each); each endpoint with free slots has its due queue walked one index seek per
/// message, at most its quota (capped at the limit, which no grant exceeds); grants go oldest head first.
/// The granted rows are leased and returned by one UPDATE, so no row is read back by its token (an unindexed
/// column). Cost: the endpoints with pending messages plus the messages the claim could take, whatever the
/// backlog behind them.
pub const CLAIM_DUE: &str = "\
WITH RECURSIVE busy AS (
    SELECT value ->> 0 AS endpoint_id, value ->> 1 AS held FROM json_each($zip_5_7)
), pending_endpoints AS (
    SELECT min(endpoint_id) AS endpoint_id FROM webhooks_dispatch_outbox WHERE status = 'pending'
    UNION ALL
    SELECT (SELECT min(o.endpoint_id) FROM webhooks_dispatch_outbox AS o
            WHERE o.status = 'pending' AND o.endpoint_id > p.endpoint_id)
    FROM pending_endpoints AS p WHERE p.endpoint_id IS NOT NULL
), open_endpoints AS (
    SELECT p.endpoint_id, min($6 - COALESCE(busy.held, 0), $4) AS quota
    FROM pending_endpoints AS p
    LEFT JOIN busy ON busy.endpoint_id = p.endpoint_id
    WHERE p.endpoint_id IS NOT NULL AND $6 - COALESCE(busy.held, 0) > 0
      AND NOT EXISTS (SELECT 1 FROM webhooks_dispatch_endpoints AS d
                      -- The first test is the partial index's own predicate, word for word: SQLite uses a
                      -- partial index only for a query that states it.
                      WHERE d.id = p.endpoint_id AND (d.status = 'disabled' OR d.blocked_until IS NOT NULL)
                        AND (d.status = 'disabled' OR d.blocked_until > $3))
      AND (json_array_length($8) = 0
           OR NOT EXISTS (SELECT 1 FROM webhooks_dispatch_endpoints AS f
                          WHERE f.id = p.endpoint_id AND f.owner_id IN (SELECT value FROM json_each($8))))
), queue AS (
    -- Each open endpoint's due messages in (next_attempt_at, id) order, one index seek per step: the next id
    -- at the same time, else the first at a later time. (A row-value `>` would seek on the time alone, as
    -- both sides are columns, and rescan every message sharing it.) n counts the unleased messages so far;
    -- leased ones are stepped over.
    SELECT e.endpoint_id, e.quota, o.lease_expires_at IS NULL OR o.lease_expires_at <= $3 AS n,
           o.lease_expires_at IS NULL OR o.lease_expires_at <= $3 AS free, o.id, o.next_attempt_at
    FROM open_endpoints AS e JOIN webhooks_dispatch_outbox AS o ON o.id = (
        SELECT h.id FROM webhooks_dispatch_outbox AS h
        WHERE h.endpoint_id = e.endpoint_id AND h.status = 'pending' AND h.next_attempt_at <= $3
        ORDER BY h.next_attempt_at, h.id LIMIT 1)
    UNION ALL
    SELECT q.endpoint_id, q.quota, q.n + (o.lease_expires_at IS NULL OR o.lease_expires_at <= $3),
           o.lease_expires_at IS NULL OR o.lease_expires_at <= $3, o.id, o.next_attempt_at
    FROM queue AS q JOIN webhooks_dispatch_outbox AS o ON o.id = COALESCE(
        (SELECT h.id FROM webhooks_dispatch_outbox AS h
         WHERE h.endpoint_id = q.endpoint_id AND h.status = 'pending' AND h.next_attempt_at = q.next_attempt_at
           AND h.id > q.id
         ORDER BY h.id LIMIT 1),
        (SELECT h.id FROM webhooks_dispatch_outbox AS h
         WHERE h.endpoint_id = q.endpoint_id AND h.status = 'pending' AND h.next_attempt_at > q.next_attempt_at
           AND h.next_attempt_at <= $3
         ORDER BY h.next_attempt_at, h.id LIMIT 1))
    WHERE q.n < q.quota
), heads AS (
    SELECT endpoint_id, min(next_attempt_at) AS head, max(n) AS available FROM queue WHERE free
    GROUP BY endpoint_id
), granted AS (
    SELECT endpoint_id, min(available, $4 - (sum(available) OVER w - available)) AS grant_n
    FROM heads
    WINDOW w AS (ORDER BY head, endpoint_id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
)
UPDATE webhooks_dispatch_outbox SET lease_token = $1, lease_expires_at = $2
WHERE id IN (SELECT q.id FROM queue AS q JOIN granted AS g ON g.endpoint_id = q.endpoint_id
             WHERE q.free AND q.n <= g.grant_n)
RETURNING id, endpoint_id,
    CASE WHEN event_id IS NULL THEN payload
         ELSE (SELECT ev.payload FROM webhooks_dispatch_events AS ev WHERE ev.id = webhooks_dispatch_outbox.event_id)
    END,
    attempts,
    (SELECT ep.url FROM webhooks_dispatch_endpoints AS ep WHERE ep.id = webhooks_dispatch_outbox.endpoint_id),
    (SELECT group_concat(k.id || ' ' || k.secret, ' ' ORDER BY k.created_at DESC, k.id DESC)
     FROM webhooks_dispatch_endpoint_keys AS k
     WHERE k.endpoint_id = webhooks_dispatch_outbox.endpoint_id AND (k.expires_at IS NULL OR k.expires_at > $3)),
    (SELECT ep.headers FROM webhooks_dispatch_endpoints AS ep WHERE ep.id = webhooks_dispatch_outbox.endpoint_id),
    (SELECT ep.owner_id FROM webhooks_dispatch_endpoints AS ep WHERE ep.id = webhooks_dispatch_outbox.endpoint_id)";

/// Per endpoint of a completion batch (the attempts the script's first statement recorded): whether anything
/// was delivered, the first failure, the last message gone dead, the first 410 when $9 says a 410 disables,
/// and the last attempt. A macro so the two statements that need it share one text.
macro_rules! health_of_batch {
    () => {
        "WITH input AS (
    SELECT value ->> 0 AS id, value ->> 3 AS attempted_at FROM json_each($zip_1_2_3_4_5_6_7_8)
), health AS (
    SELECT m.endpoint_id, max(a.outcome = 'delivered') AS ok,
           sum(a.outcome = 'retrying') AS failed,
           max(CASE WHEN a.outcome = 'retrying' AND a.status_code = 429 THEN a.next_attempt_at END) AS asked_until,
           max(CASE WHEN a.outcome = 'retrying' AND a.status_code IS NULL THEN a.next_attempt_at END)
               AS unreachable_until,
           min(CASE WHEN a.outcome <> 'delivered' THEN a.attempted_at END) AS first_failure,
           max(CASE WHEN a.outcome = 'dead' THEN a.attempted_at END) AS dead_at,
           min(CASE WHEN $9 AND a.outcome = 'dead' AND a.status_code = 410 THEN a.attempted_at END) AS gone_at,
           max(a.attempted_at) AS at
    FROM input
    JOIN webhooks_dispatch_attempts AS a ON a.message_id = input.id AND a.attempted_at = input.attempted_at
    JOIN webhooks_dispatch_outbox AS m ON m.id = input.id
    GROUP BY m.endpoint_id
)"
    };
}

/// See [`super::postgres::COMPLETE_ATTEMPTS`]. Insert the attempts of rows whose lease still matches (their
/// ids are the result), move those rows on, disable the endpoints that are gone or failing (reported), and
/// move the others' failure clocks and holds (an unreachable endpoint waits for its retry time); all in the
/// adapter's one transaction.
pub const COMPLETE_ATTEMPTS: &str = concat!("\
WITH input AS (
    SELECT value ->> 0 AS id, value ->> 1 AS lease_token, value ->> 2 AS outcome, value ->> 3 AS attempted_at,
           value ->> 4 AS status_code, value ->> 5 AS latency_ms, value ->> 6 AS next_attempt_at,
           value ->> 7 AS error
    FROM json_each($zip_1_2_3_4_5_6_7_8)
)
INSERT INTO webhooks_dispatch_attempts
    (message_id, attempt_no, attempted_at, status_code, outcome, latency_ms, next_attempt_at, error)
SELECT input.id, m.attempts + 1, input.attempted_at, input.status_code, input.outcome, input.latency_ms,
       input.next_attempt_at, input.error
FROM input JOIN webhooks_dispatch_outbox AS m
    ON m.id = input.id AND m.lease_token = input.lease_token AND m.status = 'pending'
RETURNING message_id, NULL, NULL, NULL;
WITH input AS (
    SELECT value ->> 0 AS id, value ->> 1 AS lease_token, value ->> 2 AS outcome, value ->> 3 AS attempted_at,
           value ->> 6 AS next_attempt_at
    FROM json_each($zip_1_2_3_4_5_6_7_8)
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
", health_of_batch!(), ", verdict AS (
    SELECT h.endpoint_id, COALESCE(h.gone_at, h.at) AS at, CASE
        WHEN h.gone_at IS NOT NULL THEN 'gone'
        WHEN NOT h.ok AND COALESCE(ep.failing_since, h.first_failure) <= $10
             AND (h.dead_at IS NOT NULL OR ep.last_dead_at >= ep.failing_since) THEN 'failing'
        END AS why
    FROM health AS h JOIN webhooks_dispatch_endpoints AS ep ON ep.id = h.endpoint_id
    WHERE ep.status = 'active'
)
UPDATE webhooks_dispatch_endpoints
SET status = 'disabled',
    disabled_reason = (SELECT v.why FROM verdict AS v WHERE v.endpoint_id = webhooks_dispatch_endpoints.id),
    disabled_at = (SELECT v.at FROM verdict AS v WHERE v.endpoint_id = webhooks_dispatch_endpoints.id)
WHERE id IN (SELECT endpoint_id FROM verdict WHERE why IS NOT NULL)
RETURNING NULL, id, owner_id, disabled_reason;
", health_of_batch!(), "
UPDATE webhooks_dispatch_endpoints
SET failing_since = CASE WHEN h.ok THEN NULL ELSE COALESCE(failing_since, h.first_failure) END,
    last_dead_at = COALESCE(h.dead_at, last_dead_at),
    consecutive_failures = CASE WHEN h.ok THEN 0 ELSE min(consecutive_failures + h.failed, 1000000) END,
    -- SQLite's scalar max() is NULL if any argument is: each possibly-NULL time is defaulted to 0 (1970).
    blocked_until = CASE
        WHEN h.ok THEN NULL
        WHEN consecutive_failures + h.failed < $11 AND h.unreachable_until IS NULL THEN blocked_until
        WHEN consecutive_failures + h.failed < $11 THEN max(COALESCE(blocked_until, 0), h.unreachable_until)
        ELSE max(COALESCE(blocked_until, 0), COALESCE(h.unreachable_until, 0), COALESCE(h.asked_until, 0), h.at + 1000
                 * min($13, $12 << min(consecutive_failures + h.failed - $11, 40)))
        END
FROM health AS h
WHERE webhooks_dispatch_endpoints.id = h.endpoint_id
  AND (h.dead_at IS NOT NULL OR h.failed > 0 OR (h.ok AND (failing_since IS NOT NULL OR consecutive_failures > 0))
       OR (NOT h.ok AND failing_since IS NULL))");

/// See [`super::postgres::RELEASE_CLAIMS`].
pub const RELEASE_CLAIMS: &str = "\
WITH released AS (
    SELECT value ->> 0 AS id, value ->> 1 AS lease_token FROM json_each($zip_1_2)
)
UPDATE webhooks_dispatch_outbox SET lease_token = NULL, lease_expires_at = NULL
FROM released
WHERE webhooks_dispatch_outbox.id = released.id AND webhooks_dispatch_outbox.lease_token = released.lease_token
  AND webhooks_dispatch_outbox.status = 'pending'
RETURNING webhooks_dispatch_outbox.id";

/// See [`super::postgres::NEXT_DUE`].
pub const NEXT_DUE: &str = "\
SELECT min(t) FROM (
    SELECT min(o.next_attempt_at) AS t FROM webhooks_dispatch_outbox AS o
    JOIN webhooks_dispatch_endpoints AS ep ON ep.id = o.endpoint_id AND ep.status = 'active'
    WHERE o.status = 'pending' AND o.next_attempt_at > $1
      AND (ep.blocked_until IS NULL OR ep.blocked_until <= $1)
    UNION ALL
    SELECT min(ep.blocked_until) FROM webhooks_dispatch_endpoints AS ep
    -- The partial index's predicate stated word for word, so SQLite reads that index (see CLAIM_DUE).
    WHERE (ep.status = 'disabled' OR ep.blocked_until IS NOT NULL) AND ep.status = 'active' AND ep.blocked_until > $1
      AND EXISTS (SELECT 1 FROM webhooks_dispatch_outbox AS o WHERE o.endpoint_id = ep.id AND o.status = 'pending')
)";

/// See [`super::postgres::SELECT_ATTEMPTS`].
pub const SELECT_ATTEMPTS: &str = "\
SELECT message_id, attempt_no, attempted_at, status_code, outcome, latency_ms, next_attempt_at, error
FROM webhooks_dispatch_attempts WHERE message_id = $1 ORDER BY attempt_no";

/// See [`super::postgres::QUEUE_STATS`].
pub const QUEUE_STATS: &str = "\
SELECT count(*), min(o.next_attempt_at) FROM webhooks_dispatch_outbox AS o
JOIN webhooks_dispatch_endpoints AS ep ON ep.id = o.endpoint_id AND ep.status = 'active'
    AND (ep.blocked_until IS NULL OR ep.blocked_until <= $1)
WHERE o.status = 'pending' AND o.next_attempt_at <= $1 AND (o.lease_expires_at IS NULL OR o.lease_expires_at <= $1)";

/// Settings of every connection the adapter opens: write-ahead logging (readers never block the writer),
/// full fsync at commit (durable like PostgreSQL's defaults), and enforced foreign keys.
pub const CONNECTION_SETUP: &str =
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;";

/// The tail of a status change on endpoint `$1`: the UPDATE before it returns the endpoint and 1 when it
/// changed a row; otherwise the SELECT, which runs only when that changed nothing (`changes()` counts the
/// previous statement), returns it as it was and 0.
macro_rules! changed_or_as_it_was {
    () => {
        concat!(
            "\nRETURNING ",
            endpoint_columns!(),
            ", 1;\nSELECT ",
            endpoint_columns!(),
            ", 0 FROM webhooks_dispatch_endpoints\nWHERE id = $1 AND deleted_at IS NULL AND changes() = 0"
        )
    };
}

/// See [`super::postgres::DISABLE_ENDPOINT`]. Either the UPDATE of an active endpoint reports it (changed),
/// or the SELECT, which runs only when that changed nothing, reports it as it was.
pub const DISABLE_ENDPOINT: &str = concat!(
    "\
UPDATE webhooks_dispatch_endpoints SET status = 'disabled', disabled_reason = $2, disabled_at = $3
WHERE id = $1 AND deleted_at IS NULL AND status = 'active'",
    changed_or_as_it_was!()
);

/// See [`super::postgres::ENABLE_ENDPOINT`]: the messages first, while the endpoint still reads disabled;
/// then, as in `DISABLE_ENDPOINT`, the UPDATE that changed it or else the SELECT.
pub const ENABLE_ENDPOINT: &str = concat!(
    "\
UPDATE webhooks_dispatch_outbox SET next_attempt_at = $2
WHERE endpoint_id = $1 AND status = 'pending' AND next_attempt_at > $2 AND lease_token IS NULL
  AND (SELECT status FROM webhooks_dispatch_endpoints WHERE id = $1 AND deleted_at IS NULL) = 'disabled';
UPDATE webhooks_dispatch_endpoints
SET status = 'active', disabled_reason = NULL, disabled_at = NULL, consecutive_failures = 0, blocked_until = NULL
WHERE id = $1 AND deleted_at IS NULL AND status = 'disabled'",
    changed_or_as_it_was!()
);

/// See [`super::postgres::UPDATE_ENDPOINT`].
pub const UPDATE_ENDPOINT: &str = concat!("\
UPDATE webhooks_dispatch_endpoints
SET url = COALESCE($2, url), event_types = CASE WHEN $4 THEN $3 ELSE event_types END,
    description = COALESCE($5, description), metadata = COALESCE($6, metadata), headers = COALESCE($7, headers)
WHERE id = $1 AND deleted_at IS NULL
RETURNING ", endpoint_columns!());

/// See [`super::postgres::DELETE_ENDPOINT`]: the messages first, while the endpoint still reads undeleted;
/// the last statement reports only when the endpoint's update changed a row (`changes()` is the count of
/// the previous statement).
pub const DELETE_ENDPOINT: &str = "\
UPDATE webhooks_dispatch_outbox
SET status = 'dead', dead_reason = 'endpoint_deleted', lease_token = NULL, lease_expires_at = NULL, updated_at = $2
WHERE endpoint_id = $1 AND status = 'pending'
  AND EXISTS (SELECT 1 FROM webhooks_dispatch_endpoints WHERE id = $1 AND deleted_at IS NULL);
DELETE FROM webhooks_dispatch_endpoint_keys
WHERE endpoint_id = $1 AND EXISTS (SELECT 1 FROM webhooks_dispatch_endpoints WHERE id = $1 AND deleted_at IS NULL);
UPDATE webhooks_dispatch_endpoints
SET deleted_at = $2, status = 'disabled', disabled_reason = COALESCE(disabled_reason, 'manual'),
    disabled_at = COALESCE(disabled_at, $2)
WHERE id = $1 AND deleted_at IS NULL;
SELECT id, owner_id,
       (SELECT count(*) FROM webhooks_dispatch_outbox WHERE endpoint_id = $1 AND dead_reason = 'endpoint_deleted')
FROM webhooks_dispatch_endpoints WHERE id = $1 AND changes() > 0";

/// See [`super::postgres::INSERT_EVENTS`]: the same rows, as a script in the adapter's one transaction. The
/// events are inserted only when no key names another event; messages and skips only for events this script
/// inserted (their id is new, so `created_at = $6` and the id identify them).
pub const INSERT_EVENTS: &str = "\
WITH input AS (
    SELECT key AS ord, value ->> 0 AS id, value ->> 1 AS owner_id, value ->> 2 AS event_type,
           value ->> 3 AS payload, value ->> 4 AS idempotency_key
    FROM json_each($zip_1_2_3_4_5)
)
INSERT INTO webhooks_dispatch_events (id, owner_id, event_type, payload, idempotency_key, created_at)
SELECT i.id, i.owner_id, i.event_type, i.payload, i.idempotency_key, $6
FROM input AS i
WHERE NOT EXISTS (
    SELECT 1 FROM input AS c JOIN webhooks_dispatch_events AS e
        ON e.owner_id = c.owner_id AND e.idempotency_key = c.idempotency_key
    WHERE e.event_type <> c.event_type OR e.payload <> c.payload)
ORDER BY i.ord
ON CONFLICT (owner_id, idempotency_key) DO NOTHING;
WITH input AS (
    SELECT key AS ord, value ->> 0 AS id, value ->> 1 AS owner_id, value ->> 2 AS event_type
    FROM json_each($zip_1_2_3_4_5)
)
INSERT INTO webhooks_dispatch_outbox
    (id, endpoint_id, event_type, payload, event_id, next_attempt_at, created_at, updated_at)
SELECT 'msg_' || substr(i.id, 5) || '_' || substr(ep.id, 4), ep.id, i.event_type, '', i.id, $6, $6, $6
FROM input AS i
JOIN webhooks_dispatch_events AS ev ON ev.id = i.id
JOIN webhooks_dispatch_endpoints AS ep ON ep.owner_id = i.owner_id AND ep.deleted_at IS NULL
WHERE ep.status = 'active'
  AND (ep.event_types = '[]' OR EXISTS (SELECT 1 FROM json_each(ep.event_types) WHERE value = i.event_type))
ORDER BY i.ord, ep.id;
WITH input AS (
    SELECT key AS ord, value ->> 0 AS id, value ->> 1 AS owner_id, value ->> 2 AS event_type
    FROM json_each($zip_1_2_3_4_5)
)
INSERT INTO webhooks_dispatch_event_skips (event_id, endpoint_id, reason, disabled_reason)
SELECT i.id, ep.id, 'endpoint_disabled', ep.disabled_reason
FROM input AS i
JOIN webhooks_dispatch_events AS ev ON ev.id = i.id
JOIN webhooks_dispatch_endpoints AS ep ON ep.owner_id = i.owner_id AND ep.deleted_at IS NULL
WHERE ep.status <> 'active'
  AND (ep.event_types = '[]' OR EXISTS (SELECT 1 FROM json_each(ep.event_types) WHERE value = i.event_type));
WITH input AS (
    SELECT key AS ord, value ->> 0 AS id, value ->> 1 AS owner_id, value ->> 2 AS event_type,
           value ->> 3 AS payload, value ->> 4 AS idempotency_key
    FROM json_each($zip_1_2_3_4_5)
), prior AS (
    SELECT i.ord, e.id, (e.event_type = i.event_type AND e.payload = i.payload) AS same
    FROM input AS i JOIN webhooks_dispatch_events AS e
        ON e.owner_id = i.owner_id AND e.idempotency_key = i.idempotency_key AND e.id <> i.id
), mine AS (
    SELECT i.ord, i.id FROM input AS i JOIN webhooks_dispatch_events AS e ON e.id = i.id
)
SELECT i.ord + 1, 'event', COALESCE(n.id, p.id, i.id),
       CASE WHEN n.id IS NOT NULL THEN 'created'
            WHEN p.id IS NOT NULL AND p.same THEN 'existing'
            WHEN p.id IS NOT NULL THEN 'conflict'
            WHEN EXISTS (SELECT 1 FROM prior AS c WHERE NOT c.same) THEN 'refused'
            ELSE 'raced' END,
       NULL
FROM input AS i LEFT JOIN mine AS n ON n.ord = i.ord LEFT JOIN prior AS p ON p.ord = i.ord
UNION ALL
SELECT n.ord + 1, 'message', o.id, o.endpoint_id, NULL
FROM mine AS n JOIN webhooks_dispatch_outbox AS o ON o.event_id = n.id
UNION ALL
SELECT n.ord + 1, 'skip', s.endpoint_id, s.reason, s.disabled_reason
FROM mine AS n JOIN webhooks_dispatch_event_skips AS s ON s.event_id = n.id
ORDER BY 1, 2, 3";

/// See [`super::postgres::SELECT_EVENT_BY_KEY`].
pub const SELECT_EVENT_BY_KEY: &str = "\
SELECT id, event_type, payload FROM webhooks_dispatch_events WHERE owner_id = $1 AND idempotency_key = $2";

/// See [`super::postgres::SELECT_EVENT`].
pub const SELECT_EVENT: &str = "\
SELECT id, owner_id, event_type, payload, created_at FROM webhooks_dispatch_events WHERE id = $1";

/// See [`super::postgres::SELECT_EVENT_TARGETS`].
pub const SELECT_EVENT_TARGETS: &str = "\
SELECT 'message' AS kind, o.endpoint_id, o.id, NULL, NULL
FROM webhooks_dispatch_outbox AS o WHERE o.event_id = $1
UNION ALL
SELECT 'skip', s.endpoint_id, NULL, s.reason, s.disabled_reason
FROM webhooks_dispatch_event_skips AS s WHERE s.event_id = $1
ORDER BY 1, 2";

/// See [`super::postgres::LIST_ENDPOINTS`].
pub const LIST_ENDPOINTS: &str = concat!(
    "SELECT ",
    endpoint_columns!(),
    " FROM webhooks_dispatch_endpoints
WHERE id > $2 AND ($1 IS NULL OR status = $1) AND deleted_at IS NULL
ORDER BY id LIMIT $3"
);

/// See [`super::postgres::LIST_OWNER_ENDPOINTS`].
pub const LIST_OWNER_ENDPOINTS: &str = concat!(
    "SELECT ",
    endpoint_columns!(),
    " FROM webhooks_dispatch_endpoints
WHERE owner_id = $1 AND id > $3 AND ($2 IS NULL OR status = $2) AND deleted_at IS NULL
ORDER BY owner_id, id LIMIT $4"
);

/// See [`super::postgres::LIST_MESSAGES`] (the same bound on the first page, which keeps the id a range).
pub const LIST_MESSAGES: &str = "\
SELECT o.id, o.endpoint_id, o.event_type, o.status, o.attempts, o.next_attempt_at, o.created_at, o.updated_at,
       o.event_id, o.dead_reason
FROM webhooks_dispatch_outbox AS o
WHERE o.id < COALESCE($4, (SELECT max(n.id) FROM webhooks_dispatch_outbox AS n) || 'z')
  AND ($1 IS NULL OR o.status = $1)
  AND o.created_at >= $2 AND o.created_at < $3
ORDER BY o.id DESC LIMIT $5";

/// See [`super::postgres::LIST_ENDPOINT_MESSAGES`].
pub const LIST_ENDPOINT_MESSAGES: &str = "\
SELECT o.id, o.endpoint_id, o.event_type, o.status, o.attempts, o.next_attempt_at, o.created_at, o.updated_at,
       o.event_id, o.dead_reason
FROM webhooks_dispatch_outbox AS o
WHERE o.endpoint_id = $1 AND o.id < COALESCE($5, (SELECT max(n.id) FROM webhooks_dispatch_outbox AS n) || 'z')
  AND ($2 IS NULL OR o.status = $2)
  AND o.created_at >= $3 AND o.created_at < $4
ORDER BY o.endpoint_id DESC, o.id DESC LIMIT $6";

/// See [`super::postgres::LIST_EVENT_MESSAGES`].
pub const LIST_EVENT_MESSAGES: &str = "\
SELECT o.id, o.endpoint_id, o.event_type, o.status, o.attempts, o.next_attempt_at, o.created_at, o.updated_at,
       o.event_id, o.dead_reason
FROM webhooks_dispatch_outbox AS o
WHERE o.event_id = $1 AND ($2 IS NULL OR o.endpoint_id = $2)
  AND o.id < COALESCE($6, (SELECT max(n.id) FROM webhooks_dispatch_outbox AS n) || 'z')
  AND ($3 IS NULL OR o.status = $3)
  AND o.created_at >= $4 AND o.created_at < $5
ORDER BY o.id DESC LIMIT $7";

/// See [`super::postgres::RENEW_LEASES`]. Writers are serialized, so no row is ever locked by another
/// statement and every message still held is renewed.
pub const RENEW_LEASES: &str = "\
WITH held AS (
    SELECT value ->> 0 AS id, value ->> 1 AS lease_token FROM json_each($zip_1_2)
)
UPDATE webhooks_dispatch_outbox SET lease_expires_at = $3
FROM held
WHERE webhooks_dispatch_outbox.id = held.id AND webhooks_dispatch_outbox.lease_token = held.lease_token
  AND webhooks_dispatch_outbox.status = 'pending'
RETURNING webhooks_dispatch_outbox.id, 1";

/// Endpoint signing keys: rotation, expiry, listing, rekeying.
mod keys;
pub use keys::*;

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
    disable_endpoint: DISABLE_ENDPOINT,
    enable_endpoint: ENABLE_ENDPOINT,
    update_endpoint: UPDATE_ENDPOINT,
    delete_endpoint: DELETE_ENDPOINT,
    insert_events: INSERT_EVENTS,
    select_event_by_key: SELECT_EVENT_BY_KEY,
    select_event: SELECT_EVENT,
    select_event_targets: SELECT_EVENT_TARGETS,
    list_endpoints: LIST_ENDPOINTS,
    list_owner_endpoints: LIST_OWNER_ENDPOINTS,
    list_messages: LIST_MESSAGES,
    list_endpoint_messages: LIST_ENDPOINT_MESSAGES,
    list_event_messages: LIST_EVENT_MESSAGES,
    renew_leases: RENEW_LEASES,
    rotate_key: ROTATE_KEY,
    expire_previous_keys: EXPIRE_PREVIOUS_KEYS,
    select_endpoint_keys: SELECT_ENDPOINT_KEYS,
    select_owner_keys: SELECT_OWNER_KEYS,
    select_keys_to_rekey: SELECT_KEYS_TO_REKEY,
    update_key_secrets: UPDATE_KEY_SECRETS,
};
