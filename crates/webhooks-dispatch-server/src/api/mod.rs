//! The HTTP API: routes, shared state, JSON errors and the JSON body extractor.
//!
//! Every route is declared once, in [`routes`]; the router is built from that table and the OpenAPI test
//! compares the same table with `openapi.json`, so a route cannot be added to one and forgotten in the other.
//! Handlers are thin: decode, call the library, encode. Errors carry the library's stable `code()` and
//! `http_status()`.
//!
//! Decisions: `/healthz`, `/readyz`, `/metrics`, `/openapi.json` and the key sets
//! (`/v1/owners/{owner_id}/key-set`, public keys only) are open, the rest of `/v1` needs a key;
//! `metrics_require_key` puts `/metrics` behind the key too (default off, so existing scrapers keep working). A request body over the limit is 413 from the extractor (axum's `DefaultBodyLimit`) rather
//! than from tower-http's `RequestBodyLimitLayer`, whose early 413 is plain text. An idempotency key replayed
//! with the same message answers 200 with the first message's id; reused for a different message (another
//! event type or payload) it is the library's `idempotency_conflict`, 409.

mod endpoints;
mod events;
mod keys;
mod messages;
mod ops;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use webhooks_dispatch::store::Executor;
use webhooks_dispatch::{DispatchError, Dispatcher};

use crate::auth::{self, Keys};
use crate::database::Database;
use crate::metrics::Metrics;

/// What every handler can reach.
pub struct AppState {
    /// The library, over the service's pool.
    pub dispatcher: Dispatcher<Arc<dyn Executor>>,
    /// The open database (for the backlog gauges).
    pub database: Database,
    /// This server's metrics.
    pub metrics: Arc<Metrics>,
}

/// Handler state: cheap to clone.
pub type Shared = Arc<AppState>;

/// One route: method, path (axum syntax, which is also OpenAPI's), whether it needs an API key, handler.
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path template, e.g. `/v1/messages/{id}`.
    pub path: &'static str,
    /// Behind the API key.
    pub protected: bool,
    handler: MethodRouter<Shared>,
}

fn route<H, T>(method: Method, path: &'static str, protected: bool, handler: H) -> Route
where
    H: Handler<T, Shared>,
    T: 'static,
{
    // Only the standard methods below are used, all of which have a filter.
    let filter = MethodFilter::try_from(method.clone()).expect("standard method");
    Route {
        method,
        path,
        protected,
        handler: on(filter, handler),
    }
}

/// Every route the service serves. `/v1` is behind the API key, but for owners' key sets (public keys, for
/// receivers); health, readiness, metrics and the OpenAPI document are open (they reveal no data: metrics
/// are counts only), so probes and scrapers need no key.
pub fn routes() -> Vec<Route> {
    vec![
        route(Method::POST, "/v1/endpoints", true, endpoints::create),
        route(Method::GET, "/v1/endpoints", true, endpoints::list),
        route(Method::GET, "/v1/endpoints/{id}", true, endpoints::get),
        route(Method::PATCH, "/v1/endpoints/{id}", true, endpoints::update),
        route(Method::DELETE, "/v1/endpoints/{id}", true, endpoints::delete),
        route(
            Method::POST,
            "/v1/endpoints/{id}/disable",
            true,
            endpoints::disable,
        ),
        route(Method::POST, "/v1/endpoints/{id}/enable", true, endpoints::enable),
        route(
            Method::POST,
            "/v1/endpoints/{id}/rotate-secret",
            true,
            keys::rotate,
        ),
        route(
            Method::POST,
            "/v1/endpoints/{id}/expire-previous-secrets",
            true,
            keys::expire_previous,
        ),
        route(Method::GET, "/v1/endpoints/{id}/keys", true, keys::list),
        route(
            Method::GET,
            "/v1/endpoints/{id}/public-keys",
            true,
            keys::public_keys,
        ),
        // Open, like a JWKS: public keys only, for receivers, which have no API key.
        route(Method::GET, "/v1/owners/{owner_id}/key-set", false, keys::key_set),
        route(Method::POST, "/v1/events", true, events::create),
        route(Method::GET, "/v1/events/{id}", true, events::get),
        route(Method::POST, "/v1/messages", true, messages::create),
        route(Method::GET, "/v1/messages", true, messages::list),
        route(Method::POST, "/v1/messages/batch", true, messages::create_batch),
        route(Method::GET, "/v1/messages/{id}", true, messages::get),
        route(
            Method::GET,
            "/v1/messages/{id}/attempts",
            true,
            messages::attempts,
        ),
        route(Method::GET, "/healthz", false, ops::healthz),
        route(Method::GET, "/readyz", false, ops::readyz),
        route(Method::GET, METRICS_PATH, false, ops::metrics),
        route(Method::GET, "/openapi.json", false, ops::openapi),
    ]
}

/// Where the metrics are served: open by default, behind the key with `metrics_require_key`.
const METRICS_PATH: &str = "/metrics";

/// The complete application. `keys: None` serves `/v1` without authentication (`--insecure-no-auth`);
/// `metrics_require_key` puts `/metrics` behind the same keys (the configuration refuses it without keys).
pub fn router(state: Shared, keys: Option<Keys>, body_limit: usize, metrics_require_key: bool) -> Router {
    let mut open = Router::new();
    let mut protected = Router::new();
    for r in routes() {
        if r.protected || (metrics_require_key && r.path == METRICS_PATH) {
            protected = protected.route(r.path, r.handler);
        } else {
            open = open.route(r.path, r.handler);
        }
    }
    if let Some(keys) = keys {
        // `route_layer`: the key is checked only on matched routes, before any extractor reads the body.
        protected = protected.route_layer(axum::middleware::from_fn_with_state(keys, auth::require_key));
    }
    open.merge(protected)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        // Spans carry method and URI only — never headers, so the Authorization header is never logged.
        .layer(TraceLayer::new_for_http().on_response(DefaultOnResponse::new().level(tracing::Level::DEBUG)))
        .with_state(state)
}

/// An error response: `{"error": {"code": "…", "message": "…"}}` (plus `"index"` for a refused batch item).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    index: Option<usize>,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            index: None,
        }
    }

    /// 401: missing or wrong API key.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required: Authorization: Bearer <key>",
        )
    }

    /// 400 `invalid_input` for problems found before calling the library (e.g. a bad header).
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    /// `e` for an API caller, with a destination refusal (an endpoint URL refused for where its host
    /// resolves, or because it does not resolve) turned into one generic answer: its reason would tell the
    /// caller how names resolve inside our network. The reason goes to the operators' log instead, with
    /// whose endpoint it was and the URL's host (never the whole URL, whose path or query may hold a token).
    pub fn refusing_destination(
        e: DispatchError,
        owner_id: Option<&str>,
        endpoint_id: Option<&str>,
        url: &str,
    ) -> Self {
        if !e.is_destination_refusal() {
            return e.into();
        }
        let host = url::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned));
        tracing::warn!(
            owner_id,
            endpoint_id,
            host,
            reason = %e,
            "endpoint URL refused for its destination"
        );
        Self::destination_refused(e.code())
    }

    fn destination_refused(code: &'static str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            code,
            "destination refused: the URL must resolve to a public address",
        )
    }
}

impl From<DispatchError> for ApiError {
    fn from(e: DispatchError) -> Self {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let index = match &e {
            DispatchError::InBatch { index, .. } => Some(*index),
            _ => None,
        };
        if e.is_destination_refusal() {
            // Handlers that change URLs log the refusal with its context (`refusing_destination`); anything
            // else still answers generically.
            tracing::warn!(reason = %e, "URL refused for its destination");
            return ApiError {
                index,
                ..Self::destination_refused(e.code())
            };
        }
        let message = match &e {
            // The library's storage message is already generic; the details go to the log only.
            DispatchError::Storage(s) => {
                tracing::error!(error = %s, sqlstate = s.sqlstate(), "storage error while serving a request");
                "internal storage error".to_owned()
            }
            DispatchError::InBatch { error, .. } => error.to_string(),
            other => other.to_string(),
        };
        ApiError {
            status,
            code: e.code(),
            message,
            index,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(i) = self.index {
            error["index"] = i.into();
        }
        let mut response = (self.status, Json(serde_json::json!({ "error": error }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// A single `{id}` path parameter, with a JSON error (400 `invalid_input`) when it is not valid UTF-8
/// after percent-decoding, instead of axum's plain-text rejection.
pub struct ApiPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ApiPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(ApiPath(id)),
            Err(rejection) => Err(ApiError::invalid_input(rejection.body_text())),
        }
    }
}

/// `Json` with this API's errors: malformed or mistyped JSON is 400 `invalid_json`, a body over the limit
/// is 413 `body_too_large`, a missing `Content-Type: application/json` is 415 `unsupported_media_type`.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "request body is larger than the configured limit",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ),
        // Syntax errors (400) and shape errors (422) alike: the client sent JSON we cannot use.
        _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", rejection.body_text()),
    }
}
