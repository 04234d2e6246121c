//! Fan-out: an owner's event becomes one message per active endpoint of that owner subscribed to its type.
//!
//! One statement per call (however many events and endpoints), so it joins a caller's transaction exactly as
//! `dispatch` does. The payload is stored once, on the event; its messages carry none of their own and are
//! signed, each with its own endpoint's secret, over the event's payload. Endpoints that are disabled are
//! skipped, and each skip is recorded on the event with its reason.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::dispatcher::Dispatcher;
use crate::endpoint::{check_chars, check_owner_id, DisabledReason, MAX_EVENT_TYPE_CHARS};
use crate::enqueue::{check_repeated_keys, MAX_DISPATCH_MANY};
use crate::error::{DispatchError, StorageError};
use crate::id;
use crate::message::{serialize_payload, MAX_KEY_CHARS};
use crate::store::{Executor, Row, Value};

/// Input to [`Dispatcher::dispatch_event`].
#[derive(Clone, Debug)]
pub struct NewEvent<P> {
    /// Whose event it is: it goes to this owner's endpoints. Non-blank, at most 512 characters.
    pub owner_id: String,
    /// Event type, e.g. `invoice.paid`. Non-blank, at most 256 characters.
    pub event_type: String,
    /// The event body, serialized once and sent byte for byte to every endpoint.
    pub payload: P,
    /// Optional, per owner: the same key again returns the first event and its messages and creates
    /// nothing; with another event type or payload it is `idempotency_conflict`. At most 512 characters.
    pub idempotency_key: Option<String>,
}

impl<P> NewEvent<P> {
    /// An event without an idempotency key.
    pub fn new(owner_id: impl Into<String>, event_type: impl Into<String>, payload: P) -> Self {
        NewEvent {
            owner_id: owner_id.into(),
            event_type: event_type.into(),
            payload,
            idempotency_key: None,
        }
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// The result of [`Dispatcher::dispatch_event`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DispatchedEvent {
    /// `evt_…` id.
    pub event_id: String,
    /// False when the idempotency key matched an earlier event, whose messages are returned.
    pub created: bool,
    /// One per endpoint the event went to, ordered by endpoint id.
    pub messages: Vec<EventMessage>,
    /// Endpoints of the owner subscribed to the type that did not get it, and why.
    pub skipped: Vec<SkippedEndpoint>,
}

/// One message of an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventMessage {
    /// `msg_…` id; also the `webhook-id` of every attempt.
    pub message_id: String,
    /// The endpoint it goes to.
    pub endpoint_id: String,
}

/// An endpoint an event was not sent to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkippedEndpoint {
    /// The endpoint.
    pub endpoint_id: String,
    /// Why.
    pub reason: SkipReason,
    /// For a disabled endpoint, why it was disabled.
    pub disabled_reason: Option<DisabledReason>,
}

/// Why an event skipped an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SkipReason {
    /// The endpoint was disabled when the event was dispatched.
    EndpointDisabled,
}

/// A stored event, with where it went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// `evt_…` id.
    pub id: String,
    /// Owner.
    pub owner_id: String,
    /// Event type.
    pub event_type: String,
    /// The exact JSON text that was sent.
    pub payload: String,
    /// Dispatch time.
    pub created_at: DateTime<Utc>,
    /// One per endpoint it went to, ordered by endpoint id.
    pub messages: Vec<EventMessage>,
    /// Endpoints it skipped, and why.
    pub skipped: Vec<SkippedEndpoint>,
}

/// An event that passed validation, with its id (taken now, so ids follow dispatch order).
struct ValidEvent {
    id: String,
    owner_id: String,
    event_type: String,
    body: String,
    idempotency_key: Option<String>,
}

impl ValidEvent {
    fn new<P: Serialize>(input: NewEvent<P>) -> Result<Self, DispatchError> {
        check_owner_id(&input.owner_id)?;
        check_chars("event_type", &input.event_type, MAX_EVENT_TYPE_CHARS, false)?;
        if let Some(key) = &input.idempotency_key {
            check_chars("idempotency_key", key, MAX_KEY_CHARS, false)?;
        }
        Ok(ValidEvent {
            id: id::event_id(),
            body: serialize_payload(&input.payload)?,
            owner_id: input.owner_id,
            event_type: input.event_type,
            idempotency_key: input.idempotency_key,
        })
    }
}

/// A key repeated inside one batch must name the same event; the repeats then resolve to the first one.
fn check_repeated_event_keys(events: &[ValidEvent]) -> Result<(), DispatchError> {
    check_repeated_keys(events.iter().map(|e| {
        let key = e.idempotency_key.as_deref();
        (e.owner_id.as_str(), key, e.event_type.as_str(), e.body.as_str())
    }))
}

/// How the fan-out statement answered for one event.
enum Outcome {
    Created,
    /// The key was held by this same event before: read it back.
    Existing(String),
    /// The key is held by another event.
    Conflict,
    /// Nothing was written because another event of the batch conflicts.
    Refused,
    /// The key was taken by a transaction that committed after this statement's snapshot: read it back.
    Raced,
}

fn skip_from(
    row: &Row,
    endpoint: usize,
    reason: usize,
    disabled: usize,
) -> Result<SkippedEndpoint, StorageError> {
    let reason = match row.text(reason)?.as_str() {
        "endpoint_disabled" => SkipReason::EndpointDisabled,
        _ => return Err(StorageError::decode("skip reason")),
    };
    Ok(SkippedEndpoint {
        endpoint_id: row.text(endpoint)?,
        reason,
        disabled_reason: DisabledReason::from_column(row, disabled)?,
    })
}

impl<E: Executor> Dispatcher<E> {
    /// Dispatches an owner's event: one message to each of the owner's active endpoints subscribed to its
    /// type (an endpoint with no event types takes every type), in one statement. Disabled endpoints are
    /// skipped and the skip recorded. An event that matches no endpoint is still recorded, with no messages.
    /// Inside [`using`](Dispatcher::using) it is part of the caller's transaction: rolled back, nothing of it
    /// remains. Never performs HTTP.
    ///
    /// Errors: `invalid_input` / `invalid_payload` before any SQL; `idempotency_conflict`; `storage`.
    pub async fn dispatch_event<P: Serialize>(
        &self,
        input: NewEvent<P>,
    ) -> Result<DispatchedEvent, DispatchError> {
        let mut out = self.dispatch_events(vec![input]).await.map_err(|e| match e {
            DispatchError::InBatch { error, .. } => *error,
            other => other,
        })?;
        out.pop()
            .ok_or_else(|| StorageError::decode("no result for the event").into())
    }

    /// Dispatches up to 1000 events in one statement, all or nothing: if any is invalid or reuses a key held
    /// by a different event, nothing is written and the error is `InBatch { index, .. }` for the first such
    /// event. Results are in input order.
    pub async fn dispatch_events<P: Serialize>(
        &self,
        inputs: Vec<NewEvent<P>>,
    ) -> Result<Vec<DispatchedEvent>, DispatchError> {
        if inputs.len() > MAX_DISPATCH_MANY {
            return Err(DispatchError::input("events", "at most 1000 events per batch"));
        }
        let events = inputs
            .into_iter()
            .enumerate()
            .map(|(index, input)| ValidEvent::new(input).map_err(|e| DispatchError::in_batch(index, e)))
            .collect::<Result<Vec<_>, _>>()?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        check_repeated_event_keys(&events)?;
        let params = [
            Value::from(events.iter().map(|e| Some(e.id.clone())).collect::<Vec<_>>()),
            Value::from(
                events
                    .iter()
                    .map(|e| Some(e.owner_id.clone()))
                    .collect::<Vec<_>>(),
            ),
            Value::from(
                events
                    .iter()
                    .map(|e| Some(e.event_type.clone()))
                    .collect::<Vec<_>>(),
            ),
            Value::from(events.iter().map(|e| Some(e.body.clone())).collect::<Vec<_>>()),
            Value::from(
                events
                    .iter()
                    .map(|e| e.idempotency_key.clone())
                    .collect::<Vec<_>>(),
            ),
            Value::from(self.settings().clock.now()),
        ];
        let rows = self.query(self.sql().insert_events, &params).await?;
        let (outcomes, mut results) = self.read_fan_out(&rows, &events)?;
        if let Some(index) = outcomes.iter().position(|o| matches!(o, Outcome::Conflict)) {
            return Err(DispatchError::in_batch(index, DispatchError::IdempotencyConflict));
        }
        for (index, outcome) in outcomes.iter().enumerate() {
            let existing = match outcome {
                Outcome::Created => continue,
                Outcome::Existing(id) => Some(id.clone()),
                Outcome::Raced => None,
                Outcome::Conflict | Outcome::Refused => {
                    return Err(StorageError::decode("fan-out refused without a conflict").into());
                }
            };
            results[index] = self
                .existing_event(&events[index], existing)
                .await
                .map_err(|e| DispatchError::in_batch(index, e))?;
        }
        let created: usize = results
            .iter()
            .filter(|r| r.created)
            .map(|r| r.messages.len())
            .sum();
        self.announce(created).await;
        Ok(results)
    }

    /// Parses the fan-out statement's rows: per event, in order, one `event` row, then its `message` and
    /// `skip` rows.
    fn read_fan_out(
        &self,
        rows: &[Row],
        events: &[ValidEvent],
    ) -> Result<(Vec<Outcome>, Vec<DispatchedEvent>), DispatchError> {
        let mut outcomes = Vec::with_capacity(events.len());
        let mut results: Vec<DispatchedEvent> = Vec::with_capacity(events.len());
        for row in rows {
            let ord = usize::try_from(row.int(0)?).map_err(|_| StorageError::decode("event ordinal"))?;
            match row.text(1)?.as_str() {
                "event" => {
                    if ord != results.len() + 1 {
                        return Err(StorageError::decode("fan-out rows out of order").into());
                    }
                    let outcome = match row.text(3)?.as_str() {
                        "created" => Outcome::Created,
                        "existing" => Outcome::Existing(row.text(2)?),
                        "conflict" => Outcome::Conflict,
                        "refused" => Outcome::Refused,
                        "raced" => Outcome::Raced,
                        _ => return Err(StorageError::decode("fan-out outcome").into()),
                    };
                    results.push(DispatchedEvent {
                        event_id: events[ord - 1].id.clone(),
                        created: matches!(outcome, Outcome::Created),
                        messages: Vec::new(),
                        skipped: Vec::new(),
                    });
                    outcomes.push(outcome);
                }
                "message" => {
                    let event = results.last_mut().filter(|_| ord == outcomes.len());
                    let event = event.ok_or_else(|| StorageError::decode("message row without its event"))?;
                    event.messages.push(EventMessage {
                        message_id: row.text(2)?,
                        endpoint_id: row.text(3)?,
                    });
                }
                "skip" => {
                    let event = results.last_mut().filter(|_| ord == outcomes.len());
                    let event = event.ok_or_else(|| StorageError::decode("skip row without its event"))?;
                    event.skipped.push(skip_from(row, 2, 3, 4)?);
                }
                _ => return Err(StorageError::decode("fan-out row kind").into()),
            }
        }
        if results.len() != events.len() {
            return Err(StorageError::decode("fan-out returned the wrong number of events").into());
        }
        for r in &mut results {
            r.messages.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
            r.skipped.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
        }
        Ok((outcomes, results))
    }

    /// The event already holding `event`'s key (`id` when the statement saw it, else read by key), if it is
    /// the same event; `idempotency_conflict` otherwise.
    async fn existing_event(
        &self,
        event: &ValidEvent,
        id: Option<String>,
    ) -> Result<DispatchedEvent, DispatchError> {
        let key = event.idempotency_key.clone().unwrap_or_default();
        let rows = self
            .query(
                self.sql().select_event_by_key,
                &[event.owner_id.as_str().into(), key.into()],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| StorageError::decode("conflicting event not found"))?;
        let found = row.text(0)?;
        if id.is_some_and(|id| id != found) {
            return Err(StorageError::decode("idempotent event changed").into());
        }
        if row.text(1)? != event.event_type || row.text(2)? != event.body {
            return Err(DispatchError::IdempotencyConflict);
        }
        let (messages, skipped) = self.event_targets(&found).await?;
        Ok(DispatchedEvent {
            event_id: found,
            created: false,
            messages,
            skipped,
        })
    }

    async fn event_targets(
        &self,
        event_id: &str,
    ) -> Result<(Vec<EventMessage>, Vec<SkippedEndpoint>), DispatchError> {
        let rows = self
            .query(self.sql().select_event_targets, &[event_id.into()])
            .await?;
        let (mut messages, mut skipped) = (Vec::new(), Vec::new());
        for row in &rows {
            match row.text(0)?.as_str() {
                "message" => messages.push(EventMessage {
                    message_id: row.text(2)?,
                    endpoint_id: row.text(1)?,
                }),
                "skip" => skipped.push(skip_from(row, 1, 3, 4)?),
                _ => return Err(StorageError::decode("event target kind").into()),
            }
        }
        Ok((messages, skipped))
    }

    /// An event, with the messages it became and the endpoints it skipped.
    ///
    /// Errors: `invalid_input`, `unknown_event`, `storage`.
    pub async fn event(&self, event_id: &str) -> Result<Event, DispatchError> {
        check_chars("event_id", event_id, MAX_KEY_CHARS, false)?;
        let rows = self.query(self.sql().select_event, &[event_id.into()]).await?;
        let row = rows.first().ok_or(DispatchError::UnknownEvent)?;
        let (messages, skipped) = self.event_targets(event_id).await?;
        Ok(Event {
            id: row.text(0)?,
            owner_id: row.text(1)?,
            event_type: row.text(2)?,
            payload: row.text(3)?,
            created_at: row.timestamp(4)?,
            messages,
            skipped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(owner: &str, key: Option<&str>, body: &str) -> ValidEvent {
        ValidEvent {
            id: id::event_id(),
            owner_id: owner.to_owned(),
            event_type: "t".to_owned(),
            body: body.to_owned(),
            idempotency_key: key.map(str::to_owned),
        }
    }

    #[test]
    fn a_key_repeated_in_one_batch_must_name_the_same_event_and_is_per_owner() {
        let same = [event("a", Some("k"), "1"), event("a", Some("k"), "1")];
        assert!(check_repeated_event_keys(&same).is_ok());
        let other_owner = [event("a", Some("k"), "1"), event("b", Some("k"), "2")];
        assert!(check_repeated_event_keys(&other_owner).is_ok());
        let conflict = [
            event("a", None, "0"),
            event("a", Some("k"), "1"),
            event("a", Some("k"), "2"),
        ];
        match check_repeated_event_keys(&conflict) {
            Err(DispatchError::InBatch { index: 2, error }) => {
                assert_eq!(error.code(), "idempotency_conflict");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invariant1_events_are_validated_before_any_sql() {
        let blank = ValidEvent::new(NewEvent::new(" ", "t", 1)).err().unwrap();
        assert_eq!(blank.code(), "invalid_input");
        let long_type = ValidEvent::new(NewEvent::new("o", "x".repeat(257), 1))
            .err()
            .unwrap();
        assert_eq!(long_type.code(), "invalid_input");
        let big = ValidEvent::new(NewEvent::new("o", "t", "x".repeat(300 * 1024)))
            .err()
            .unwrap();
        assert_eq!(big.code(), "invalid_payload");
        let ok = ValidEvent::new(NewEvent::new("o", "t", serde_json::json!({"a": 1}))).unwrap();
        assert!(ok.id.starts_with("evt_"));
        assert_eq!(ok.body, r#"{"a":1}"#);
    }
}
