//! The SQL seam: the only way the core reaches a database.
//!
//! The core hands an [`Executor`] a `&'static str` statement with positional parameters (`$1`, `$2`, … each
//! with an explicit cast, so every driver sees the same parameter types) and gets rows of [`Value`]s back.
//! Because statements are `'static`, no input can ever be spliced into SQL text: every value is a bound
//! parameter. Adapters for sqlx and tokio-postgres live behind cargo features; the default build links no
//! database driver.

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};

use crate::error::StorageError;

#[cfg(test)]
mod audit;
mod migrations;
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod rusqlite;
pub mod sqlite;
#[cfg(feature = "sqlx")]
pub mod sqlx;
#[cfg(feature = "tokio-postgres")]
pub mod tokio_postgres;

/// A boxed, sendable future, so the trait stays object-safe and drains can run on any tokio worker thread.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs the core's statements. Implement it to plug in a driver this crate does not ship an adapter for.
///
/// Implementations must bind `params` positionally and never interpolate them; must report failures as
/// [`StorageError`] classified by SQLSTATE; and must decode each result column into the [`Value`] variant
/// matching its PostgreSQL type (`text`→`Text`, `int4`→`I32`, `int8`→`I64`, `bool`→`Bool`,
/// `timestamptz`→`Timestamp`, `text[]`→`TextArray`, SQL NULL→`Null`).
pub trait Executor: Send + Sync {
    /// The statements in this engine's dialect (default: PostgreSQL).
    fn statements(&self) -> &'static Statements {
        &postgres::STATEMENTS
    }

    /// Runs one statement and returns every row it produced (possibly none).
    fn query<'a>(
        &'a self,
        sql: &'static str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>, StorageError>>;

    /// Runs a parameterless script of several statements as one implicit transaction (the simple-query
    /// protocol): all of it commits, or none. Used by migrations only, which rely on that atomicity to record
    /// each migration in the same transaction as its schema change.
    fn batch_execute<'a>(&'a self, sql: &'static str) -> BoxFuture<'a, Result<(), StorageError>>;
}

/// A dedicated connection subscribed to the workers' wake-up channel (`LISTEN webhooks_dispatch_due`).
///
/// Adapters: [`sqlx::SqlxListener`] and [`tokio_postgres::TokioPostgresListener`]. A worker without a listener
/// still works, by polling.
pub trait Listener: Send {
    /// Resolves at the next notification (several pending ones may be coalesced into one). An error means the
    /// connection was lost; the worker falls back to polling and calls again later, and the adapter
    /// reconnects on that call. Must be cancel-safe: the worker drops this future when other work arrives.
    fn recv(&mut self) -> BoxFuture<'_, Result<(), StorageError>>;
}

impl<L: Listener + ?Sized> Listener for Box<L> {
    fn recv(&mut self) -> BoxFuture<'_, Result<(), StorageError>> {
        (**self).recv()
    }
}

impl<E: Executor + ?Sized> Executor for &E {
    fn statements(&self) -> &'static Statements {
        (**self).statements()
    }

    fn query<'a>(
        &'a self,
        sql: &'static str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>, StorageError>> {
        (**self).query(sql, params)
    }

    fn batch_execute<'a>(&'a self, sql: &'static str) -> BoxFuture<'a, Result<(), StorageError>> {
        (**self).batch_execute(sql)
    }
}

impl<E: Executor + ?Sized> Executor for std::sync::Arc<E> {
    fn statements(&self) -> &'static Statements {
        (**self).statements()
    }

    fn query<'a>(
        &'a self,
        sql: &'static str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>, StorageError>> {
        (**self).query(sql, params)
    }

    fn batch_execute<'a>(&'a self, sql: &'static str) -> BoxFuture<'a, Result<(), StorageError>> {
        (**self).batch_execute(sql)
    }
}

/// Every statement the core runs, in one engine's dialect. Each engine keeps its SQL in one file
/// ([`postgres`], [`sqlite`]) and both honour the same contract per statement: the same parameters in the
/// same order, the same result columns.
#[derive(Debug)]
pub struct Statements {
    /// Creates `webhooks_dispatch_migrations` (version, name, applied_at) if missing; a script, serialized
    /// against concurrent migrations where the engine needs it.
    pub create_migrations_table: &'static str,
    /// → version of every applied migration, ascending.
    pub select_migrations: &'static str,
    /// The numbered schema migrations, oldest first, versions 1, 2, 3 … with no gap.
    pub migrations: &'static [Migration],
    /// $1 id, $2 owner_id, $3 url, $4 first key id, $5 event_types, $6 created_at, $7 description,
    /// $8 metadata, $9 headers, $10 key algorithm, $11 key secret (as stored), $12 public key or NULL.
    pub insert_endpoint: &'static str,
    /// $1 id → the endpoint's columns (`Endpoint::from_row`); nothing when unknown or deleted.
    pub select_endpoint: &'static str,
    /// $1 id, $2 endpoint_id, $3 event_type, $4 payload, $5 idempotency_key, $6 now
    /// → found, subscribed, inserted id.
    pub insert_message: &'static str,
    /// Parallel arrays $1 ids, $2 endpoint ids, $3 event types, $4 payloads, $5 keys; $6 now
    /// → per input in order: ordinal, found, subscribed, message id, created.
    pub insert_messages: &'static str,
    /// $1 endpoint_id, $2 idempotency_key → id.
    pub select_message_by_key: &'static str,
    /// $1 id → id, endpoint_id, event_type, status, attempts, next_attempt_at, created_at, updated_at,
    /// event_id.
    pub select_message: &'static str,
    /// $1 token, $2 lease expiry, $3 now, $4 limit, $5 endpoints held by this process, $6 per-endpoint
    /// limit, $7 messages held per endpoint of $5, $8 owners at their cap → id, endpoint_id, payload,
    /// attempts, url, signing keys unexpired at $3 (`id secret …`, newest first), custom headers, owner_id.
    pub claim_due: &'static str,
    /// Parallel arrays $1 ids, $2 tokens, $3 outcomes, $4 attempted_at, $5 status codes, $6 latencies,
    /// $7 next attempt times, $8 errors; $9 whether a 410 disables, $10 the failing cutoff (year 1: off) →
    /// (message_id, NULL, NULL, NULL) per recorded attempt, (NULL, endpoint id, owner id, reason) per
    /// endpoint disabled.
    pub complete_attempts: &'static str,
    /// Parallel arrays $1 ids, $2 tokens → id per released message.
    pub release_claims: &'static str,
    /// $1 now → earliest future next_attempt_at among pending messages.
    pub next_due: &'static str,
    /// Wakes listening workers in other processes; `None` where the engine has no such channel.
    pub notify_due: Option<&'static str>,
    /// Subscribes a [`Listener`]'s dedicated connection to the wake-up channel; `None` without one.
    pub listen_due: Option<&'static str>,
    /// Run by the engine's adapter on every connection it opens, before any other statement; `None`: nothing.
    pub connection_setup: Option<&'static str>,
    /// $1 message id → message_id, attempt_no, attempted_at, status_code, outcome, latency_ms,
    /// next_attempt_at, error.
    pub select_attempts: &'static str,
    /// $1 now → number of due pending messages, earliest next_attempt_at among them.
    pub queue_stats: &'static str,
    /// $1 endpoint id, $2 reason, $3 now → the endpoint (no row: unknown).
    pub disable_endpoint: &'static str,
    /// $1 endpoint id, $2 now → the endpoint (no row: unknown).
    pub enable_endpoint: &'static str,
    /// $1 endpoint id, $2 url, $3 event types, $4 whether $3 applies, $5 description, $6 metadata, $7 headers
    /// (NULL: unchanged) → the endpoint (no row: unknown).
    pub update_endpoint: &'static str,
    /// $1 endpoint id, $2 now → endpoint id, messages ended (no row: unknown).
    pub delete_endpoint: &'static str,
    /// Parallel arrays $1 event ids, $2 owners, $3 types, $4 payloads, $5 keys; $6 now → the fan-out's rows.
    pub insert_events: &'static str,
    /// $1 owner id, $2 key → id, event_type, payload.
    pub select_event_by_key: &'static str,
    /// $1 event id → id, owner_id, event_type, payload, created_at.
    pub select_event: &'static str,
    /// $1 event id → kind, endpoint id, message id, reason, disabled reason.
    pub select_event_targets: &'static str,
    /// $1 status or NULL, $2 after id, $3 limit → endpoints in id order.
    pub list_endpoints: &'static str,
    /// $1 owner, $2 status or NULL, $3 after id, $4 limit → the owner's endpoints in id order.
    pub list_owner_endpoints: &'static str,
    /// $1 status or NULL, $2 since, $3 until, $4 before id or NULL, $5 limit → messages as
    /// `select_message` reads them, newest first.
    pub list_messages: &'static str,
    /// $1 endpoint id, $2 status or NULL, $3 since, $4 until, $5 before id or NULL, $6 limit
    /// → that endpoint's messages, newest first.
    pub list_endpoint_messages: &'static str,
    /// $1 event id, $2 endpoint id or NULL, $3 status or NULL, $4 since, $5 until, $6 before
    /// id or NULL, $7 limit → that event's messages, newest first.
    pub list_event_messages: &'static str,
    /// Parallel arrays $1 ids, $2 tokens; $3 the new lease expiry → (id, renewed) per message still leased
    /// under its token; renewed is false where the row was busy (locked by another statement) and left alone.
    pub renew_leases: &'static str,
    /// $1 endpoint id, $2 new key id, $3 algorithm, $4 stored secret, $5 public key or NULL, $6 now, $7 end of
    /// the previous keys' grace, $8 most unexpired keys → the new key's id (no row: unknown endpoint).
    pub rotate_key: &'static str,
    /// $1 endpoint id, $2 now → endpoint id, previous keys ended (no row: unknown endpoint).
    pub expire_previous_keys: &'static str,
    /// $1 endpoint id, $2 now → id, algorithm, public_key, created_at, expires_at of its unexpired keys,
    /// newest first (none: unknown endpoint).
    pub select_endpoint_keys: &'static str,
    /// $1 owner id, $2 now → endpoint id, then the columns of `select_endpoint_keys`, of the owner's unexpired
    /// ed25519 keys.
    pub select_owner_keys: &'static str,
    /// $1 after key id, $2 limit → id, stored secret, in id order.
    pub select_keys_to_rekey: &'static str,
    /// Parallel arrays $1 key ids, $2 secrets as read, $3 new secrets → id per key replaced (unchanged since).
    pub update_key_secrets: &'static str,
}

impl Statements {
    /// Every statement, for tests that check what the SQL touches. Built by destructuring the struct, so a
    /// statement added to it cannot be left out of the audit: an unlisted field fails to compile, and a
    /// destructured but unlisted one is an unused variable (a CI error).
    pub fn all(&self) -> Vec<&'static str> {
        let Statements {
            create_migrations_table,
            select_migrations,
            migrations,
            insert_endpoint,
            select_endpoint,
            insert_message,
            insert_messages,
            select_message_by_key,
            select_message,
            claim_due,
            complete_attempts,
            release_claims,
            next_due,
            notify_due,
            listen_due,
            connection_setup,
            select_attempts,
            queue_stats,
            disable_endpoint,
            enable_endpoint,
            update_endpoint,
            delete_endpoint,
            insert_events,
            select_event_by_key,
            select_event,
            select_event_targets,
            list_endpoints,
            list_owner_endpoints,
            list_messages,
            list_endpoint_messages,
            list_event_messages,
            renew_leases,
            rotate_key,
            expire_previous_keys,
            select_endpoint_keys,
            select_owner_keys,
            select_keys_to_rekey,
            update_key_secrets,
        } = self;
        let mut all = vec![
            *create_migrations_table,
            *select_migrations,
            *insert_endpoint,
            *select_endpoint,
            *insert_message,
            *insert_messages,
            *select_message_by_key,
            *select_message,
            *claim_due,
            *complete_attempts,
            *release_claims,
            *next_due,
            *select_attempts,
            *queue_stats,
            *disable_endpoint,
            *enable_endpoint,
            *update_endpoint,
            *delete_endpoint,
            *insert_events,
            *select_event_by_key,
            *select_event,
            *select_event_targets,
            *list_endpoints,
            *list_owner_endpoints,
            *list_messages,
            *list_endpoint_messages,
            *list_event_messages,
            *renew_leases,
            *rotate_key,
            *expire_previous_keys,
            *select_endpoint_keys,
            *select_owner_keys,
            *select_keys_to_rekey,
            *update_key_secrets,
        ];
        all.extend(
            [*notify_due, *listen_due, *connection_setup]
                .into_iter()
                .flatten(),
        );
        all.extend(migrations.iter().map(|m| m.sql));
        all
    }
}

/// One numbered, forward-only schema change, applied at most once per database and recorded in
/// `webhooks_dispatch_migrations`.
#[derive(Debug)]
pub struct Migration {
    /// Its number: migrations apply in ascending order, and a database records the ones it has.
    pub version: u32,
    /// The file it comes from, without `.sql` (`0002_endpoint_queue_index`).
    pub name: &'static str,
    /// The script that applies it, run as one transaction: on PostgreSQL the migration lock first, then the
    /// row that records the version (which a second process that raced for the same migration cannot insert
    /// again, so its whole attempt rolls back before any schema change), then the file's statements.
    pub sql: &'static str,
}

/// A statement parameter or result column.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// SQL NULL.
    Null,
    /// `text`.
    Text(String),
    /// `int4`.
    I32(i32),
    /// `int8`.
    I64(i64),
    /// `bool`.
    Bool(bool),
    /// `timestamptz`.
    Timestamp(DateTime<Utc>),
    /// `text[]`.
    TextArray(Vec<String>),
    /// `text[]` with NULL elements (bulk statements unnest it).
    NullableTextArray(Vec<Option<String>>),
    /// `int4[]` with NULL elements.
    NullableI32Array(Vec<Option<i32>>),
    /// `int8[]`.
    I64Array(Vec<i64>),
    /// `timestamptz[]` with NULL elements.
    NullableTimestampArray(Vec<Option<DateTime<Utc>>>),
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::I32(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::I64(v)
    }
}
impl From<DateTime<Utc>> for Value {
    fn from(v: DateTime<Utc>) -> Self {
        Value::Timestamp(v)
    }
}
impl From<Vec<String>> for Value {
    fn from(v: Vec<String>) -> Self {
        Value::TextArray(v)
    }
}
impl From<Vec<Option<String>>> for Value {
    fn from(v: Vec<Option<String>>) -> Self {
        Value::NullableTextArray(v)
    }
}
impl From<Vec<Option<i32>>> for Value {
    fn from(v: Vec<Option<i32>>) -> Self {
        Value::NullableI32Array(v)
    }
}
impl From<Vec<i64>> for Value {
    fn from(v: Vec<i64>) -> Self {
        Value::I64Array(v)
    }
}
impl From<Vec<Option<DateTime<Utc>>>> for Value {
    fn from(v: Vec<Option<DateTime<Utc>>>) -> Self {
        Value::NullableTimestampArray(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// One result row, columns in statement order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn col(&self, i: usize) -> Result<&Value, StorageError> {
        self.0
            .get(i)
            .ok_or_else(|| StorageError::decode("missing column"))
    }

    /// Column `i` as text; NULL is an error.
    pub fn text(&self, i: usize) -> Result<String, StorageError> {
        self.opt_text(i)?
            .ok_or_else(|| StorageError::decode("unexpected NULL text"))
    }

    /// Column `i` as nullable text.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, StorageError> {
        match self.col(i)? {
            Value::Text(s) => Ok(Some(s.clone())),
            Value::Null => Ok(None),
            _ => Err(StorageError::decode("expected text")),
        }
    }

    /// Column `i` as an integer (`int4` or `int8`); NULL is an error.
    pub fn int(&self, i: usize) -> Result<i64, StorageError> {
        self.opt_int(i)?
            .ok_or_else(|| StorageError::decode("unexpected NULL integer"))
    }

    /// Column `i` as a nullable integer.
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, StorageError> {
        match self.col(i)? {
            Value::I32(v) => Ok(Some(i64::from(*v))),
            Value::I64(v) => Ok(Some(*v)),
            Value::Null => Ok(None),
            _ => Err(StorageError::decode("expected integer")),
        }
    }

    /// Column `i` as a nullable boolean (engines without a boolean type return 0 or 1).
    pub fn opt_bool(&self, i: usize) -> Result<Option<bool>, StorageError> {
        match self.col(i)? {
            Value::Bool(v) => Ok(Some(*v)),
            Value::I64(v) => Ok(Some(*v != 0)),
            Value::Null => Ok(None),
            _ => Err(StorageError::decode("expected bool")),
        }
    }

    /// Column `i` as a timestamp; NULL is an error.
    pub fn timestamp(&self, i: usize) -> Result<DateTime<Utc>, StorageError> {
        self.opt_timestamp(i)?
            .ok_or_else(|| StorageError::decode("unexpected NULL timestamp"))
    }

    /// Column `i` as a nullable timestamp (engines without a timestamp type store Unix microseconds).
    pub fn opt_timestamp(&self, i: usize) -> Result<Option<DateTime<Utc>>, StorageError> {
        match self.col(i)? {
            Value::Timestamp(v) => Ok(Some(*v)),
            Value::I64(micros) => DateTime::from_timestamp_micros(*micros)
                .map(Some)
                .ok_or_else(|| StorageError::decode("timestamp out of range")),
            Value::Null => Ok(None),
            _ => Err(StorageError::decode("expected timestamp")),
        }
    }

    /// Column `i` as a text array; NULL reads as empty (engines without arrays store a JSON array).
    pub fn text_array(&self, i: usize) -> Result<Vec<String>, StorageError> {
        match self.col(i)? {
            Value::TextArray(v) => Ok(v.clone()),
            Value::Text(json) => {
                serde_json::from_str(json).map_err(|_| StorageError::decode("expected a JSON array"))
            }
            Value::Null => Ok(Vec::new()),
            _ => Err(StorageError::decode("expected text[]")),
        }
    }
}
