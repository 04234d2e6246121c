//! `/v1/endpoints`: register an endpoint (the only response that ever contains its secret), list and read
//! them, and disable or enable one.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use webhooks_dispatch::{Endpoint, EndpointPage, EndpointStatus, ListEndpoints, NewEndpoint};

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
}

/// `POST /v1/endpoints` response: the stored endpoint plus its signing secret, shown this once.
#[derive(Serialize)]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    endpoint: Endpoint,
    secret: String,
}

/// Registers an endpoint → 201.
pub async fn create(
    State(state): State<Shared>,
    ApiJson(body): ApiJson<CreateEndpoint>,
) -> Result<(StatusCode, Json<CreatedEndpoint>), ApiError> {
    let mut input = NewEndpoint::new(body.owner_id, body.url);
    input.event_types = body.event_types;
    let registered = state.dispatcher.register_endpoint(input).await?;
    // Read back so the response shows what was stored (event types normalized, creation time).
    let endpoint = state.dispatcher.endpoint(&registered.id).await?;
    tracing::info!(endpoint_id = %endpoint.id, owner_id = %endpoint.owner_id, "endpoint registered");
    let created = CreatedEndpoint {
        endpoint,
        secret: registered.secret.expose().to_owned(),
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
