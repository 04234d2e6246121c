//! The public entry point: register endpoints, enqueue messages, read status and the attempt log.
//!
//! Enqueueing only writes the outbox table; HTTP happens only in [`Dispatcher::deliver_due`] (see `drain`).

use std::sync::Arc;

use crate::attempt::{Attempt, Outcome};
use crate::config::{DispatcherBuilder, Settings};
use crate::endpoint::{
    check_chars, normalize_event_types, vet_url, Endpoint, NewEndpoint, RegisteredEndpoint,
    MAX_OWNER_ID_CHARS,
};
use crate::error::{DispatchError, StorageError};
use crate::id;
use crate::message::{Message, MessageState, MAX_KEY_CHARS};
use crate::signing::EndpointSecret;
use crate::store::{Executor, Row, Value};

/// Sends webhooks through a transactional outbox. Cheap to clone when the executor is.
///
/// The executor is usually a connection pool. To enqueue inside your own transaction, wrap the transaction in
/// an executor and call [`Dispatcher::using`].
pub struct Dispatcher<E> {
    executor: E,
    settings: Arc<Settings>,
}

impl<E: Clone> Clone for Dispatcher<E> {
    fn clone(&self) -> Self {
        Dispatcher {
            executor: self.executor.clone(),
            settings: self.settings.clone(),
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
        Dispatcher { executor, settings }
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The same configuration over another executor — typically your open transaction, so a dispatch commits
    /// or rolls back with your own writes.
    pub fn using<X>(&self, executor: X) -> Dispatcher<X> {
        Dispatcher {
            executor,
            settings: self.settings.clone(),
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

    /// Creates the three `webhooks_dispatch_*` tables and their indexes if missing. Idempotent and safe to run
    /// concurrently from several processes.
    pub async fn migrate(&self) -> Result<(), DispatchError> {
        self.executor.batch_execute(self.sql().migrate).await?;
        Ok(())
    }

    /// Registers an endpoint and returns its id and signing secret — the only time the secret is returned.
    ///
    /// The URL must be https and every address its host resolves to must be allowed; otherwise `invalid_url`.
    pub async fn register_endpoint(&self, input: NewEndpoint) -> Result<RegisteredEndpoint, DispatchError> {
        check_chars("owner_id", &input.owner_id, MAX_OWNER_ID_CHARS, false)?;
        let event_types = normalize_event_types(input.event_types.as_deref())?;
        vet_url(&input.url, &self.settings.policy, self.settings.resolver.as_ref()).await?;

        let id = id::endpoint_id();
        let secret = EndpointSecret::generate();
        let params = [
            Value::from(id.as_str()),
            Value::from(input.owner_id),
            Value::from(input.url),
            Value::from(secret.expose()),
            Value::from(event_types),
            Value::from(self.settings.clock.now()),
        ];
        self.query(self.sql().insert_endpoint, &params).await?;
        Ok(RegisteredEndpoint { id, secret })
    }

    /// Reads an endpoint (never its secret).
    pub async fn endpoint(&self, endpoint_id: &str) -> Result<Endpoint, DispatchError> {
        check_chars("endpoint_id", endpoint_id, MAX_KEY_CHARS, false)?;
        let rows = self
            .query(self.sql().select_endpoint, &[endpoint_id.into()])
            .await?;
        let row = rows.first().ok_or(DispatchError::UnknownEndpoint)?;
        Ok(Endpoint {
            id: row.text(0)?,
            owner_id: row.text(1)?,
            url: row.text(2)?,
            event_types: row.text_array(3)?,
            created_at: row.timestamp(4)?,
        })
    }

    /// A message's current status.
    pub async fn message(&self, message_id: &str) -> Result<Message, DispatchError> {
        check_chars("message_id", message_id, MAX_KEY_CHARS, false)?;
        let rows = self
            .query(self.sql().select_message, &[message_id.into()])
            .await?;
        let row = rows.first().ok_or(DispatchError::UnknownMessage)?;
        Ok(Message {
            id: row.text(0)?,
            endpoint_id: row.text(1)?,
            event_type: row.text(2)?,
            state: MessageState::parse(&row.text(3)?).ok_or_else(|| StorageError::decode("message state"))?,
            attempts: to_u32(row.int(4)?)?,
            next_attempt_at: row.timestamp(5)?,
            created_at: row.timestamp(6)?,
            updated_at: row.timestamp(7)?,
        })
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
