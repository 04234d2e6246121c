//! Enqueueing: `dispatch` and `dispatch_many` write outbox rows and nothing else — no HTTP, ever.

use std::collections::HashMap;

use serde::Serialize;

use crate::dispatcher::Dispatcher;
use crate::error::{DispatchError, StorageError};
use crate::id;
use crate::message::{Dispatched, NewMessage};
use crate::store::{Executor, Value};

/// Most messages one [`Dispatcher::dispatch_many`] call accepts.
pub const MAX_DISPATCH_MANY: usize = 1000;

/// A key repeated inside one batch must name the same message (or event) each time; checked before any SQL,
/// so the batch stays all or nothing. Items are (scope, key, event type, body), the scope being what a key is
/// unique within: the endpoint for messages, the owner for events.
pub(crate) fn check_repeated_keys<'a>(
    items: impl Iterator<Item = (&'a str, Option<&'a str>, &'a str, &'a str)>,
) -> Result<(), DispatchError> {
    let mut seen: HashMap<(&str, &str), (&str, &str)> = HashMap::new();
    for (index, (scope, key, event_type, body)) in items.enumerate() {
        let Some(key) = key else { continue };
        match seen.get(&(scope, key)) {
            Some(first) if *first != (event_type, body) => {
                return Err(DispatchError::in_batch(index, DispatchError::IdempotencyConflict));
            }
            Some(_) => {}
            None => {
                seen.insert((scope, key), (event_type, body));
            }
        }
    }
    Ok(())
}

/// Who announces new rows (the observer's count, waking workers, the NOTIFY): the insert itself, or its
/// caller once it has answered everyone waiting on it (the coalescer: the NOTIFY is a round trip that its
/// callers need not wait for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Announce {
    Now,
    Later,
}

/// A message that passed validation: its id (taken now, so ids follow dispatch order) and serialized body.
#[derive(Clone, Debug)]
pub(crate) struct ValidMessage {
    id: String,
    endpoint_id: String,
    event_type: String,
    body: String,
    idempotency_key: Option<String>,
}

impl ValidMessage {
    fn new<P: Serialize>(input: NewMessage<P>) -> Result<Self, DispatchError> {
        let body = input.validate()?;
        Ok(ValidMessage {
            id: id::message_id(),
            endpoint_id: input.endpoint_id,
            event_type: input.event_type,
            body,
            idempotency_key: input.idempotency_key,
        })
    }
}

impl<E: Executor> Dispatcher<E> {
    /// Enqueues a message: validates, then writes one outbox row. Never performs HTTP.
    ///
    /// On a dispatcher built with
    /// [`coalesce_dispatches`](crate::DispatcherBuilder::coalesce_dispatches), concurrent calls share one
    /// multi-row insert; each still gets exactly its own result.
    ///
    /// Errors: `invalid_input` / `invalid_payload` before any SQL; `unknown_endpoint`; `endpoint_disabled`;
    /// `event_type_not_subscribed`; `idempotency_conflict`; `storage`.
    pub async fn dispatch<P: Serialize>(&self, input: NewMessage<P>) -> Result<Dispatched, DispatchError> {
        let message = ValidMessage::new(input)?;
        match self.coalescer() {
            Some(coalescer) => coalescer.dispatch(self.settings_arc(), message).await,
            None => self.insert_one(message, Announce::Now).await,
        }
    }

    /// Writes one validated message with the single-row statement.
    pub(crate) async fn insert_one(
        &self,
        message: ValidMessage,
        announce: Announce,
    ) -> Result<Dispatched, DispatchError> {
        let params = [
            Value::from(message.id),
            Value::from(message.endpoint_id.as_str()),
            Value::from(message.event_type.as_str()),
            Value::from(message.body.as_str()),
            Value::from(message.idempotency_key.clone()),
            Value::from(self.settings().clock.now()),
        ];
        let rows = self.query(self.sql().insert_message, &params).await?;
        let row = rows
            .first()
            .ok_or_else(|| StorageError::decode("no row from insert"))?;
        if row.int(0)? == 0 {
            return Err(DispatchError::UnknownEndpoint);
        }
        if row.opt_bool(3)? != Some(true) {
            return Err(DispatchError::EndpointDisabled);
        }
        if row.opt_bool(1)? != Some(true) {
            return Err(DispatchError::EventTypeNotSubscribed);
        }
        if let Some(inserted) = row.opt_text(2)? {
            if announce == Announce::Now {
                self.announce(1).await;
            }
            return Ok(Dispatched {
                message_id: inserted,
                created: true,
            });
        }
        // Idempotency conflict: the row exists (ON CONFLICT waited for it to commit), so read it back.
        let key = message.idempotency_key.unwrap_or_default();
        let message_id = self
            .existing_message(message.endpoint_id, key, &message.event_type, &message.body)
            .await?;
        Ok(Dispatched {
            message_id,
            created: false,
        })
    }

    /// Enqueues up to 1000 messages in one round trip, with `dispatch`'s validation and idempotency rules.
    ///
    /// All or nothing: if any message is invalid, targets an unknown endpoint or an unsubscribed event type,
    /// nothing is inserted and the error is `InBatch { index, .. }` for the first such message. Results are in
    /// input order; repeated idempotency keys (within the batch or with earlier dispatches) yield the first
    /// message's id with `created: false`.
    pub async fn dispatch_many<P: Serialize>(
        &self,
        inputs: Vec<NewMessage<P>>,
    ) -> Result<Vec<Dispatched>, DispatchError> {
        if inputs.len() > MAX_DISPATCH_MANY {
            return Err(DispatchError::input(
                "messages",
                "at most 1000 messages per batch",
            ));
        }
        let messages = inputs
            .into_iter()
            .enumerate()
            .map(|(index, input)| ValidMessage::new(input).map_err(|e| DispatchError::in_batch(index, e)))
            .collect::<Result<Vec<_>, _>>()?;
        self.insert_many(messages, Announce::Now).await
    }

    /// Writes validated messages with the multi-row statement, all or nothing.
    pub(crate) async fn insert_many(
        &self,
        messages: Vec<ValidMessage>,
        announce: Announce,
    ) -> Result<Vec<Dispatched>, DispatchError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        check_repeated_keys(messages.iter().map(|m| {
            let key = m.idempotency_key.as_deref();
            (
                m.endpoint_id.as_str(),
                key,
                m.event_type.as_str(),
                m.body.as_str(),
            )
        }))?;
        let mut ids = Vec::with_capacity(messages.len());
        let mut endpoint_ids = Vec::with_capacity(messages.len());
        let mut event_types = Vec::with_capacity(messages.len());
        let mut payloads = Vec::with_capacity(messages.len());
        let mut keys = Vec::with_capacity(messages.len());
        for message in messages {
            ids.push(Some(message.id));
            endpoint_ids.push(Some(message.endpoint_id));
            event_types.push(Some(message.event_type));
            payloads.push(Some(message.body));
            keys.push(message.idempotency_key);
        }
        let count = ids.len();
        let params = [
            Value::from(ids),
            Value::from(endpoint_ids),
            Value::from(event_types),
            Value::from(payloads),
            Value::from(keys),
            Value::from(self.settings().clock.now()),
        ];
        let rows = self.query(self.sql().insert_messages, &params).await?;
        if rows.len() != count {
            return Err(StorageError::decode("batch insert returned the wrong number of rows").into());
        }
        // Refusals first: when any message is refused, the statement inserted nothing at all.
        for (index, row) in rows.iter().enumerate() {
            if row.opt_bool(1)? != Some(true) {
                return Err(DispatchError::in_batch(index, DispatchError::UnknownEndpoint));
            }
            if row.opt_bool(6)? != Some(true) {
                return Err(DispatchError::in_batch(index, DispatchError::EndpointDisabled));
            }
            if row.opt_bool(2)? != Some(true) {
                return Err(DispatchError::in_batch(
                    index,
                    DispatchError::EventTypeNotSubscribed,
                ));
            }
            if row.opt_bool(5)? == Some(false) {
                return Err(DispatchError::in_batch(index, DispatchError::IdempotencyConflict));
            }
        }
        let mut out = Vec::with_capacity(rows.len());
        for (index, row) in rows.iter().enumerate() {
            let message_id = match row.opt_text(3)? {
                Some(id) => id,
                // Conflict with a row committed concurrently, after this statement's snapshot.
                None => {
                    // The inputs are read back from the parameters rather than kept as copies: this path is
                    // rare, and a batch's payloads are most of its memory.
                    let input = |column: usize| match &params[column] {
                        Value::NullableTextArray(v) => v[index].as_deref().unwrap_or_default(),
                        _ => "",
                    };
                    let (endpoint, key) = (input(1).to_owned(), input(4).to_owned());
                    self.existing_message(endpoint, key, input(2), input(3))
                        .await
                        .map_err(|e| DispatchError::in_batch(index, e))?
                }
            };
            out.push(Dispatched {
                message_id,
                created: row.opt_bool(4)? == Some(true),
            });
        }
        if announce == Announce::Now {
            self.announce(out.iter().filter(|d| d.created).count()).await;
        }
        Ok(out)
    }

    /// The id of the message already holding this idempotency key; `idempotency_conflict` if it is not the
    /// same message (another event type or payload).
    async fn existing_message(
        &self,
        endpoint_id: String,
        key: String,
        event_type: &str,
        payload: &str,
    ) -> Result<String, DispatchError> {
        let rows = self
            .query(
                self.sql().select_message_by_key,
                &[endpoint_id.into(), key.into()],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| StorageError::decode("conflicting message not found"))?;
        if row.text(1)? != event_type || row.text(2)? != payload {
            return Err(DispatchError::IdempotencyConflict);
        }
        Ok(row.text(0)?)
    }

    /// Counts `created` new messages and wakes workers for them (nothing when there are none).
    pub(crate) async fn announce(&self, created: usize) {
        if created > 0 {
            self.settings().observer.dispatched(created);
            self.wake_workers().await;
        }
    }

    /// Wakes this process's workers, and sends a debounced NOTIFY through this dispatcher's executor for
    /// workers elsewhere (inside a caller's transaction it is delivered at commit). A failure only costs
    /// latency (workers also poll), so it is logged, not returned.
    pub(crate) async fn wake_workers(&self) {
        self.settings().local_wake.notify_one();
        let Some(debounce) = &self.settings().notify else {
            return;
        };
        let Some(notify) = self.sql().notify_due else {
            return;
        };
        if debounce.fire() {
            if let Err(e) = self.query(notify, &[]).await {
                tracing::warn!(error = %e, "could not notify workers; they will find the message by polling");
            }
        }
    }
}
