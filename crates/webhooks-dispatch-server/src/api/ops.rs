//! Open operational routes: liveness, readiness, metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;
use webhooks_dispatch::DispatchError;

use super::{ApiError, Shared};

/// Id used by the readiness probe; it never exists, so the probe reads one index entry and nothing else.
const PROBE_ID: &str = "msg_readyz_probe";

/// `GET /healthz`: the process is up and serving. Deliberately touches nothing else, so a database outage
/// does not get a healthy process restarted.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the database answers a cheap read through the library (200), or 503 `storage`.
pub async fn readyz(State(state): State<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    match state.dispatcher.message(PROBE_ID).await {
        Ok(_) | Err(DispatchError::UnknownMessage) => Ok(Json(json!({ "status": "ready" }))),
        Err(e) => {
            tracing::warn!(error = %e, "readiness probe failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                e.code(),
                "the database is not reachable or not migrated",
            ))
        }
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<Shared>) -> impl IntoResponse {
    let body = state.metrics.render(&state.dispatcher).await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body)
}

/// `GET /openapi.json`: the API description.
pub async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::DOCUMENT,
    )
}
