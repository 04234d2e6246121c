//! `/v1/messages`: enqueue one or many messages, list what was sent, read a message's status and its attempt
//! log.
//!
//! Payloads are taken as raw JSON and stored byte for byte, so what the receiver gets (and what is signed)
//! is exactly what the client sent — key order and number formatting included.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use webhooks_dispatch::{Attempt, Dispatched, ListMessages, Message, MessagePage, MessageState, NewMessage};

use super::{ApiError, ApiJson, ApiPath, Shared};

/// Header carrying the idempotency key of `POST /v1/messages`.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// `POST /v1/messages` body. The idempotency key, if any, comes in the `Idempotency-Key` header.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    endpoint_id: String,
    event_type: String,
    payload: Box<RawValue>,
}

/// One item of `POST /v1/messages/batch`; each carries its own optional idempotency key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchItem {
    endpoint_id: String,
    event_type: String,
    payload: Box<RawValue>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// `POST /v1/messages/batch` body: up to 1000 messages, all accepted or none.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    messages: Vec<BatchItem>,
}

/// The result of enqueueing one message.
#[derive(Serialize)]
pub struct Sent {
    id: String,
    /// False when the idempotency key matched an earlier message, whose id is returned.
    created: bool,
}

impl From<Dispatched> for Sent {
    fn from(d: Dispatched) -> Self {
        Sent {
            id: d.message_id,
            created: d.created,
        }
    }
}

/// `POST /v1/messages/batch` response, in input order.
#[derive(Serialize)]
pub struct BatchSent {
    messages: Vec<Sent>,
}

/// `GET /v1/messages/{id}/attempts` response, oldest first.
#[derive(Serialize)]
pub struct Attempts {
    attempts: Vec<Attempt>,
}

/// 201 when something new was created, 200 for a pure idempotent replay.
fn status(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// Enqueues one message → 201, or 200 with the original id when the idempotency key was seen before.
pub async fn create(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendMessage>,
) -> Result<(StatusCode, Json<Sent>), ApiError> {
    let mut input = NewMessage::new(body.endpoint_id, body.event_type, body.payload);
    if let Some(key) = headers.get(IDEMPOTENCY_KEY) {
        let key = key
            .to_str()
            .map_err(|_| ApiError::invalid_input("Idempotency-Key must be visible ASCII"))?;
        input = input.idempotency_key(key);
    }
    let sent = state.dispatcher.dispatch(input).await?;
    Ok((status(sent.created), Json(sent.into())))
}

/// Enqueues up to 1000 messages in one statement, all or nothing → 201 if any was created, else 200.
pub async fn create_batch(
    State(state): State<Shared>,
    ApiJson(body): ApiJson<Batch>,
) -> Result<(StatusCode, Json<BatchSent>), ApiError> {
    let inputs = body
        .messages
        .into_iter()
        .map(|m| NewMessage {
            endpoint_id: m.endpoint_id,
            event_type: m.event_type,
            payload: m.payload,
            idempotency_key: m.idempotency_key,
        })
        .collect();
    let sent = state.dispatcher.dispatch_many(inputs).await?;
    let any_created = sent.iter().any(|d| d.created);
    let messages: Vec<Sent> = sent.into_iter().map(Sent::from).collect();
    Ok((status(any_created), Json(BatchSent { messages })))
}

/// `GET /v1/messages` query: every field optional; times in RFC 3339.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    endpoint_id: Option<String>,
    event_id: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Lists messages newest first, a page at a time → `{"data": [...], "next_cursor": ...}`.
pub async fn list(
    State(state): State<Shared>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<MessagePage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid_input(e.body_text()))?;
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => Some(
            MessageState::parse(s)
                .ok_or_else(|| ApiError::invalid_input("status must be pending, delivered or dead"))?,
        ),
    };
    let filter = ListMessages {
        endpoint_id: query.endpoint_id,
        event_id: query.event_id,
        status,
        since: time("since", query.since.as_deref())?,
        until: time("until", query.until.as_deref())?,
        limit: query.limit,
        cursor: query.cursor,
    };
    Ok(Json(state.dispatcher.list_messages(filter).await?))
}

/// A query parameter holding an RFC 3339 instant (any offset; compared in UTC).
fn time(name: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| ApiError::invalid_input(format!("{name} must be an RFC 3339 time ({e})")))
        })
        .transpose()
}

/// A message's status.
pub async fn get(State(state): State<Shared>, ApiPath(id): ApiPath) -> Result<Json<Message>, ApiError> {
    Ok(Json(state.dispatcher.message(&id).await?))
}

/// A message's attempts, oldest first (404 for an unknown message, an empty list before the first attempt).
pub async fn attempts(State(state): State<Shared>, ApiPath(id): ApiPath) -> Result<Json<Attempts>, ApiError> {
    let attempts = state.dispatcher.list_attempts(&id).await?;
    Ok(Json(Attempts { attempts }))
}
