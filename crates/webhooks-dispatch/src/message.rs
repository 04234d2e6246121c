//! Messages: dispatch input, payload encoding and stored status.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::endpoint::{check_chars, MAX_EVENT_TYPE_CHARS};
use crate::error::{DispatchError, StorageError};
use crate::store::Row;

/// Largest serialized payload, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// Longest accepted endpoint id or idempotency key, in characters.
pub const MAX_KEY_CHARS: usize = 512;

/// Input to [`Dispatcher::dispatch`](crate::Dispatcher::dispatch).
///
/// `payload` is anything `serde::Serialize`: its JSON serialization is stored, signed and sent byte for byte.
/// To send pre-encoded JSON verbatim, use `Box<serde_json::value::RawValue>`.
#[derive(Clone, Debug)]
pub struct NewMessage<P> {
    /// Target endpoint (`ep_…`).
    pub endpoint_id: String,
    /// Event type, e.g. `invoice.paid`. Non-blank, at most 256 characters.
    pub event_type: String,
    /// The event body.
    pub payload: P,
    /// Optional: dispatching again with the same key for the same endpoint returns the first message's id and
    /// creates nothing. At most 512 characters.
    pub idempotency_key: Option<String>,
}

impl<P> NewMessage<P> {
    /// A message without an idempotency key.
    pub fn new(endpoint_id: impl Into<String>, event_type: impl Into<String>, payload: P) -> Self {
        NewMessage {
            endpoint_id: endpoint_id.into(),
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

impl<P: Serialize> NewMessage<P> {
    /// Validates every field and serializes the payload; runs before any SQL.
    pub(crate) fn validate(&self) -> Result<String, DispatchError> {
        check_chars("endpoint_id", &self.endpoint_id, MAX_KEY_CHARS, false)?;
        check_chars("event_type", &self.event_type, MAX_EVENT_TYPE_CHARS, false)?;
        if let Some(key) = &self.idempotency_key {
            check_chars("idempotency_key", key, MAX_KEY_CHARS, false)?;
        }
        serialize_payload(&self.payload)
    }
}

/// The payload's JSON text, as stored, signed and sent; at most [`MAX_PAYLOAD_BYTES`].
pub(crate) fn serialize_payload<P: Serialize>(payload: &P) -> Result<String, DispatchError> {
    let body = serde_json::to_string(payload).map_err(|_| DispatchError::InvalidPayload {
        reason: "payload is not serializable to JSON",
    })?;
    if body.len() > MAX_PAYLOAD_BYTES {
        return Err(DispatchError::InvalidPayload {
            reason: "payload larger than 256 KiB",
        });
    }
    Ok(body)
}

/// The result of a dispatch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dispatched {
    /// `msg_…` id; also the `webhook-id` of every delivery attempt.
    pub message_id: String,
    /// False when an earlier dispatch with the same idempotency key already created the message.
    pub created: bool,
}

/// Where a message is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    /// Waiting for its next attempt.
    Pending,
    /// An endpoint answered 2xx. Final.
    Delivered,
    /// Failed permanently or exhausted its attempts. Final.
    Dead,
}

impl MessageState {
    /// The stored text form.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Pending => "pending",
            MessageState::Delivered => "delivered",
            MessageState::Dead => "dead",
        }
    }

    /// The state named by its stored (and wire) form, if any.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(MessageState::Pending),
            "delivered" => Some(MessageState::Delivered),
            "dead" => Some(MessageState::Dead),
            _ => None,
        }
    }
}

/// A stored message's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `msg_…` id.
    pub id: String,
    /// Target endpoint.
    pub endpoint_id: String,
    /// Event type.
    pub event_type: String,
    /// Current state.
    pub state: MessageState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (meaningful while pending).
    pub next_attempt_at: DateTime<Utc>,
    /// Dispatch time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The event this message fans out (`evt_…`); none for a message dispatched to one endpoint directly.
    pub event_id: Option<String>,
    /// Why a dead message ended without its attempts deciding it; none when its last attempt did.
    pub dead_reason: Option<DeadReason>,
}

/// Why a message is dead when no attempt made it so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeadReason {
    /// Its endpoint was deleted while it waited.
    EndpointDeleted,
}

impl Message {
    /// Decodes the columns every message-reading statement returns, in this order: id, endpoint_id,
    /// event_type, status, attempts, next_attempt_at, created_at, updated_at, event_id, dead_reason.
    pub(crate) fn from_row(row: &Row) -> Result<Message, StorageError> {
        Ok(Message {
            id: row.text(0)?,
            endpoint_id: row.text(1)?,
            event_type: row.text(2)?,
            state: MessageState::parse(&row.text(3)?).ok_or_else(|| StorageError::decode("message state"))?,
            attempts: u32::try_from(row.int(4)?).map_err(|_| StorageError::decode("integer out of range"))?,
            next_attempt_at: row.timestamp(5)?,
            created_at: row.timestamp(6)?,
            updated_at: row.timestamp(7)?,
            event_id: row.opt_text(8)?,
            dead_reason: match row.opt_text(9)?.as_deref() {
                None => None,
                Some("endpoint_deleted") => Some(DeadReason::EndpointDeleted),
                Some(_) => return Err(StorageError::decode("dead reason")),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invariant1_message_limits() {
        let ok = NewMessage::new("ep_1", "a.b", serde_json::json!({"k": 1}));
        assert_eq!(ok.validate().unwrap(), r#"{"k":1}"#);
        let blank = NewMessage::new("ep_1", "  ", 1);
        assert_eq!(blank.validate().unwrap_err().code(), "invalid_input");
        let big = NewMessage::new("ep_1", "a", "x".repeat(MAX_PAYLOAD_BYTES));
        assert_eq!(big.validate().unwrap_err().code(), "invalid_payload");
        let at_limit = NewMessage::new("ep_1", "a", "x".repeat(MAX_PAYLOAD_BYTES - 2));
        assert!(
            at_limit.validate().is_ok(),
            "the limit is inclusive of the quotes"
        );
        let key = NewMessage::new("ep_1", "a", 1).idempotency_key("k".repeat(513));
        assert!(key.validate().is_err());
    }
}
