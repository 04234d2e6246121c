//! The public entry point: register endpoints, enqueue messages, read status and the attempt log.
//!
//! Enqueueing only writes the outbox table; HTTP happens only in [`Dispatcher::deliver_due`] (see `drain`).

use std::sync::Arc;

use crate::attempt::{Attempt, Outcome};
use crate::coalesce::Coalescer;
use crate::config::{DispatcherBuilder, Settings};
use crate::endpoint::{
    check_chars, check_description, check_owner_id, normalize_event_types, stored_metadata, vet_url,
    Endpoint, NewEndpoint, RegisteredEndpoint,
};
use crate::error::{DispatchError, StorageError};
use crate::id;
use crate::message::{Message, MAX_KEY_CHARS};
use crate::observe::LifecycleEvent;
use crate::signing::SigningSecret;
use crate::store::{Executor, Migration, Row, Value};

/// Sends webhooks through a transactional outbox. Cheap to clone when the executor is.
///
/// The executor is usually a connection pool. To enqueue inside your own transaction, wrap the transaction in
/// an executor and call [`Dispatcher::using`].
pub struct Dispatcher<E> {
    executor: E,
    settings: Arc<Settings>,
    /// Set only on a dispatcher built with `coalesce_dispatches` (and its clones), never by `using`.
    coalescer: Option<Arc<Coalescer>>,
}

impl<E: Clone> Clone for Dispatcher<E> {
    fn clone(&self) -> Self {
        Dispatcher {
            executor: self.executor.clone(),
            settings: self.settings.clone(),
            coalescer: self.coalescer.clone(),
        }
    }
}

impl<E> std::fmt::Debug for Dispatcher<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("retry", &self.settings.retry)
            .field("allowlist", &self.settings.policy.allowlist())
            .finish_non_exhaustive()
    }
}

impl<E> Dispatcher<E> {
    /// A dispatcher with default settings. Performs no I/O and cannot fail.
    pub fn new(executor: E) -> Self {
        Self::builder(executor).build()
    }

    /// Starts configuring a dispatcher.
    pub fn builder(executor: E) -> DispatcherBuilder<E> {
        DispatcherBuilder::new(executor)
    }

    pub(crate) fn from_parts(executor: E, settings: Arc<Settings>) -> Self {
        Dispatcher {
            executor,
            settings,
            coalescer: None,
        }
    }

    pub(crate) fn with_coalescer(mut self, coalescer: Option<Arc<Coalescer>>) -> Self {
        self.coalescer = coalescer;
        self
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn settings_arc(&self) -> &Arc<Settings> {
        &self.settings
    }

    pub(crate) fn coalescer(&self) -> Option<&Arc<Coalescer>> {
        self.coalescer.as_ref()
    }

    /// The same configuration over another executor — typically your open transaction, so a dispatch commits
    /// or rolls back with your own writes.
    pub fn using<X>(&self, executor: X) -> Dispatcher<X> {
        // Never coalesced: a caller's transaction must get its rows through its own executor.
        Dispatcher {
            executor,
            settings: self.settings.clone(),
            coalescer: None,
        }
    }

    /// The executor this dispatcher runs statements on.
    pub fn executor(&self) -> &E {
        &self.executor
    }
}

impl<E: Executor> Dispatcher<E> {
    pub(crate) fn sql(&self) -> &'static crate::store::Statements {
        self.executor.statements()
    }

    pub(crate) async fn query(
        &self,
        statement: &'static str,
        params: &[Value],
    ) -> Result<Vec<Row>, StorageError> {
        self.executor.query(statement, params).await
    }

    /// Brings the schema up to date: applies, in order, each numbered migration this release knows that the
    /// database has not recorded in `webhooks_dispatch_migrations`, each in one transaction together with the
    /// row that records it. Creates the `webhooks_dispatch_*` tables on a new database, and upgrades one made
    /// by an earlier release (including one from before numbered migrations) with its rows intact.
    ///
    /// Running it again is a no-op, and it is safe to run from several processes at once: migrations are
    /// serialized (an advisory lock on PostgreSQL, the write lock on SQLite), and a process that finds a
    /// migration already applied by another skips it. A database migrated by a newer release is refused with
    /// [`DispatchError::SchemaTooNew`] and left unchanged.
    pub async fn migrate(&self) -> Result<(), DispatchError> {
        let sql = self.sql();
        self.executor.batch_execute(sql.create_migrations_table).await?;
        let mut applied = self.applied_migrations().await?;
        for migration in sql.migrations {
            refuse_newer(&applied, sql.migrations)?;
            let version = i64::from(migration.version);
            if applied.contains(&version) {
                continue;
            }
            let Err(e) = self.executor.batch_execute(migration.sql).await else {
                tracing::info!(version, name = migration.name, "applied schema migration");
                applied.push(version);
                continue;
            };
            // The record is the truth, whatever the error: another process that applied this migration first
            // makes our recording INSERT fail (and our whole script roll back), and a commit whose answer was
            // lost has still applied it.
            match self.applied_migrations().await {
                Ok(now) if now.contains(&version) => applied = now,
                _ => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Versions recorded in `webhooks_dispatch_migrations`, ascending.
    async fn applied_migrations(&self) -> Result<Vec<i64>, StorageError> {
        let rows = self.query(self.sql().select_migrations, &[]).await?;
        rows.iter().map(|r| r.int(0)).collect()
    }

    /// Registers an endpoint and returns its id and signing secret — the only time the secret is returned.
    ///
    /// The URL must be https and every address its host resolves to must be allowed; otherwise `invalid_url`
    /// (`dns_timeout` when its lookup did not answer in time: worth retrying). It is stored as normalized by
    /// the URL parser (see [`Endpoint::url`]). The owner id and the URL must not contain control or
    /// bidirectional formatting characters (`invalid_input`, `invalid_url`).
    pub async fn register_endpoint(&self, input: NewEndpoint) -> Result<RegisteredEndpoint, DispatchError> {
        check_owner_id(&input.owner_id)?;
        let event_types = normalize_event_types(input.event_types.as_deref())?;
        check_description(&input.description)?;
        let metadata = stored_metadata(&input.metadata)?;
        let headers = input.headers.to_stored()?;
        let url = vet_url(&input.url, &self.settings.policy, self.settings.resolver.as_ref()).await?;

        let id = id::endpoint_id();
        let key_id = id::key_id();
        let signing = SigningSecret::generate(input.signature);
        let public_key = signing.public_key();
        let now = crate::keys::stored_time(self.settings.clock.now());
        let owner_id = input.owner_id;
        let params = [
            Value::from(id.as_str()),
            Value::from(owner_id.as_str()),
            Value::from(url),
            Value::from(key_id.as_str()),
            Value::from(event_types),
            Value::from(now),
            Value::from(input.description),
            Value::from(metadata),
            Value::from(headers),
            Value::from(signing.scheme().as_str()),
            Value::from(self.seal(&key_id, signing.expose())?),
            Value::from(public_key.as_ref().map(|k| k.as_str().to_owned())),
        ];
        self.query(self.sql().insert_endpoint, &params).await?;
        self.settings
            .observer
            .lifecycle(&LifecycleEvent::EndpointCreated {
                endpoint_id: &id,
                owner_id: &owner_id,
            });
        let (key, secret) = crate::keys::current_key(key_id, signing, now);
        Ok(RegisteredEndpoint { id, secret, key })
    }

    /// Reads an endpoint (never its secret).
    pub async fn endpoint(&self, endpoint_id: &str) -> Result<Endpoint, DispatchError> {
        check_chars("endpoint_id", endpoint_id, MAX_KEY_CHARS, false)?;
        let rows = self
            .query(self.sql().select_endpoint, &[endpoint_id.into()])
            .await?;
        let row = rows.first().ok_or(DispatchError::UnknownEndpoint)?;
        Ok(Endpoint::from_row(row)?)
    }

    /// A message's current status.
    pub async fn message(&self, message_id: &str) -> Result<Message, DispatchError> {
        check_chars("message_id", message_id, MAX_KEY_CHARS, false)?;
        let rows = self
            .query(self.sql().select_message, &[message_id.into()])
            .await?;
        let row = rows.first().ok_or(DispatchError::UnknownMessage)?;
        Ok(Message::from_row(row)?)
    }

    /// Every attempt made for a message, oldest first. `unknown_message` if the message does not exist.
    pub async fn list_attempts(&self, message_id: &str) -> Result<Vec<Attempt>, DispatchError> {
        check_chars("message_id", message_id, MAX_KEY_CHARS, false)?;
        let rows = self
            .query(self.sql().select_attempts, &[message_id.into()])
            .await?;
        if rows.is_empty() {
            // Distinguish "no attempts yet" from "no such message".
            self.message(message_id).await?;
        }
        rows.iter().map(attempt_from_row).collect()
    }
}

/// A database that records a migration newer than every one this release knows was migrated by a newer
/// release, whose schema this one cannot vouch for.
fn refuse_newer(applied: &[i64], known: &[Migration]) -> Result<(), DispatchError> {
    let supported = known.last().map_or(0, |m| m.version);
    match applied.iter().max() {
        Some(&found) if found > i64::from(supported) => Err(DispatchError::SchemaTooNew { found, supported }),
        _ => Ok(()),
    }
}

fn to_u32(v: i64) -> Result<u32, StorageError> {
    u32::try_from(v).map_err(|_| StorageError::decode("integer out of range"))
}

fn attempt_from_row(row: &Row) -> Result<Attempt, DispatchError> {
    let status_code = match row.opt_int(3)? {
        Some(s) => Some(u16::try_from(s).map_err(|_| StorageError::decode("status out of range"))?),
        None => None,
    };
    Ok(Attempt {
        message_id: row.text(0)?,
        attempt_no: to_u32(row.int(1)?)?,
        attempted_at: row.timestamp(2)?,
        status_code,
        outcome: Outcome::parse(&row.text(4)?).ok_or_else(|| StorageError::decode("attempt outcome"))?,
        latency_ms: u64::try_from(row.int(5)?).unwrap_or(0),
        next_attempt_at: row.opt_timestamp(6)?,
        error: row.opt_text(7)?,
    })
}
