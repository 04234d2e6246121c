//! `/v1/events`: fan an owner's event out to each of its subscribed endpoints, and read an event back.
//!
//! The payload is taken as raw JSON and stored byte for byte, as for `/v1/messages`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use webhooks_dispatch::{DispatchedEvent, EventMessage, NewEvent, SkippedEndpoint};

use super::messages::IDEMPOTENCY_KEY;
use super::{ApiError, ApiJson, ApiPath, Shared};

/// `POST /v1/events` body. The idempotency key, if any, comes in the `Idempotency-Key` header.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendEvent {
    owner_id: String,
    event_type: String,
    payload: Box<RawValue>,
}

/// `GET /v1/events/{id}` response: the event with its exact payload, its messages and its skips.
#[derive(Serialize)]
pub struct EventView {
    id: String,
    owner_id: String,
    event_type: String,
    payload: Box<RawValue>,
    created_at: chrono::DateTime<chrono::Utc>,
    messages: Vec<EventMessage>,
    skipped: Vec<SkippedEndpoint>,
}

/// Fans an event out → 201, or 200 with the first event (and its messages) when the idempotency key was
/// seen before for this owner.
pub async fn create(
    State(state): State<Shared>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendEvent>,
) -> Result<(StatusCode, Json<DispatchedEvent>), ApiError> {
    let mut input = NewEvent::new(body.owner_id, body.event_type, body.payload);
    if let Some(key) = headers.get(IDEMPOTENCY_KEY) {
        let key = key
            .to_str()
            .map_err(|_| ApiError::invalid_input("Idempotency-Key must be visible ASCII"))?;
        input = input.idempotency_key(key);
    }
    let sent = state.dispatcher.dispatch_event(input).await?;
    let status = if sent.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(sent)))
}

/// Reads an event.
pub async fn get(State(state): State<Shared>, ApiPath(id): ApiPath) -> Result<Json<EventView>, ApiError> {
    let event = state.dispatcher.event(&id).await?;
    // Stored as the exact JSON text a client sent (or the library serialized), so it parses back as JSON.
    let payload = RawValue::from_string(event.payload).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
            "stored payload is not JSON",
        )
    })?;
    Ok(Json(EventView {
        id: event.id,
        owner_id: event.owner_id,
        event_type: event.event_type,
        payload,
        created_at: event.created_at,
        messages: event.messages,
        skipped: event.skipped,
    }))
}
