//! `/v1/endpoints`: register an endpoint (with a rotation, the only responses that ever contain a secret),
//! list and read them, change, disable, enable or delete one. Its keys are in [`super::keys`].

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use webhooks_dispatch::{
    CustomHeaders, DeletedEndpoint, Endpoint, EndpointKey, EndpointPage, EndpointStatus, ListEndpoints,
    NewEndpoint, UpdateEndpoint,
};

use super::{ApiError, ApiJson, ApiPath, Shared};

/// `POST /v1/endpoints` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    owner_id: String,
    url: String,
    /// Omitted or empty: every event type.
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// Values are the receiver's credentials: never logged (this type has no `Debug` of its values: the
    /// derive below prints them only through [`CustomHeaders`], which redacts).
    #[serde(default)]
    headers: Headers,
    /// `hmac-sha256` (the default) or `ed25519`.
    #[serde(default)]
    signature: Option<String>,
}

/// Custom headers as JSON (`{"name": "value"}`), held redacted.
#[derive(Default, Deserialize)]
#[serde(from = "BTreeMap<String, String>")]
pub struct Headers(CustomHeaders);

impl From<BTreeMap<String, String>> for Headers {
    fn from(map: BTreeMap<String, String>) -> Self {
        Headers(
            map.into_iter()
                .fold(CustomHeaders::new(), |h, (k, v)| h.with(k, v)),
        )
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// `POST /v1/endpoints` response: the stored endpoint, its signing key, and its HMAC secret, shown this once.
#[derive(Serialize)]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    endpoint: Endpoint,
    /// The HMAC secret; absent for an ed25519 endpoint, whose signing key never leaves the sender.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    /// The current key, without its secret (with the public key of an ed25519 endpoint).
    key: EndpointKey,
}

/// Registers an endpoint → 201.
pub async fn create(
    State(state): State<Shared>,
    ApiJson(body): ApiJson<CreateEndpoint>,
) -> Result<(StatusCode, Json<CreatedEndpoint>), ApiError> {
    let (owner_id, url) = (body.owner_id.clone(), body.url.clone());
    let scheme = super::keys::scheme(body.signature.as_deref())?.unwrap_or_default();
    let mut input = NewEndpoint::new(body.owner_id, body.url)
        .description(body.description)
        .headers(body.headers.0)
        .signature(scheme);
    input.event_types = body.event_types;
    input.metadata = body.metadata;
    let registered = state
        .dispatcher
        .register_endpoint(input)
        .await
        .map_err(|e| ApiError::refusing_destination(e, Some(&owner_id), None, &url))?;
    // Read back so the response shows what was stored (event types normalized, creation time).
    let endpoint = state.dispatcher.endpoint(&registered.id).await?;
    tracing::info!(
        endpoint_id = %endpoint.id,
        owner_id = %endpoint.owner_id,
        algorithm = scheme.as_str(),
        "endpoint registered"
    );
    let created = CreatedEndpoint {
        endpoint,
        secret: registered.secret.map(|s| s.expose().to_owned()),
        key: registered.key,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /v1/endpoints` query: every field optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    owner_id: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Lists endpoints in registration order, a page at a time → `{"data": [...], "next_cursor": ...}`.
pub async fn list(
    State(state): State<Shared>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EndpointPage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid_input(e.body_text()))?;
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => Some(
            EndpointStatus::parse(s)
                .ok_or_else(|| ApiError::invalid_input("status must be active or disabled"))?,
        ),
    };
    let filter = ListEndpoints {
        owner_id: query.owner_id,
        status,
        limit: query.limit,
        cursor: query.cursor,
    };
    Ok(Json(state.dispatcher.list_endpoints(filter).await?))
}

/// Reads an endpoint, never its secret.
pub async fn get(State(state): State<Shared>, ApiPath(id): ApiPath) -> Result<Json<Endpoint>, ApiError> {
    Ok(Json(state.dispatcher.endpoint(&id).await?))
}

/// Disables an endpoint by hand → 200 with the endpoint. Its pending messages wait; events skip it.
pub async fn disable(State(state): State<Shared>, ApiPath(id): ApiPath) -> Result<Json<Endpoint>, ApiError> {
    let endpoint = state.dispatcher.disable_endpoint(&id).await?;
    tracing::info!(endpoint_id = %endpoint.id, "endpoint disabled by request");
    Ok(Json(endpoint))
}

/// Enables an endpoint again → 200 with the endpoint. Its waiting messages are due at once.
pub async fn enable(State(state): State<Shared>, ApiPath(id): ApiPath) -> Result<Json<Endpoint>, ApiError> {
    let endpoint = state.dispatcher.enable_endpoint(&id).await?;
    tracing::info!(endpoint_id = %endpoint.id, "endpoint enabled by request");
    Ok(Json(endpoint))
}

/// `PATCH /v1/endpoints/{id}` body: every field optional; what is given replaces what was.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchEndpoint {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    description: Option<String>,
    metadata: Option<BTreeMap<String, String>>,
    headers: Option<Headers>,
}

/// Changes an endpoint → 200 with the endpoint as it now is.
pub async fn update(
    State(state): State<Shared>,
    ApiPath(id): ApiPath,
    ApiJson(body): ApiJson<PatchEndpoint>,
) -> Result<Json<Endpoint>, ApiError> {
    let url = body.url.clone();
    let update = UpdateEndpoint {
        url: body.url,
        event_types: body.event_types,
        description: body.description,
        metadata: body.metadata,
        headers: body.headers.map(|h| h.0),
    };
    let endpoint = match state.dispatcher.update_endpoint(&id, update).await {
        Ok(endpoint) => endpoint,
        Err(e) if e.is_destination_refusal() => {
            // The owner is for the operators' log only; reading it costs a lookup on this path alone.
            let owner = state.dispatcher.endpoint(&id).await.ok().map(|e| e.owner_id);
            let url = url.unwrap_or_default();
            return Err(ApiError::refusing_destination(
                e,
                owner.as_deref(),
                Some(&id),
                &url,
            ));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(endpoint_id = %endpoint.id, "endpoint updated by request");
    Ok(Json(endpoint))
}

/// Deletes an endpoint → 200 with how many pending messages ended.
pub async fn delete(
    State(state): State<Shared>,
    ApiPath(id): ApiPath,
) -> Result<Json<DeletedEndpoint>, ApiError> {
    let deleted = state.dispatcher.delete_endpoint(&id).await?;
    tracing::info!(endpoint_id = %deleted.id, messages_ended = deleted.messages_ended, "endpoint deleted by request");
    Ok(Json(deleted))
}
