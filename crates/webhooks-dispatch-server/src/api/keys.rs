//! An endpoint's signing keys over their life: rotate (with a grace period in which old and new keys both
//! sign), end the previous keys early, list the keys, and publish an owner's ed25519 public keys.
//!
//! The key set (`GET /v1/owners/{owner_id}/key-set`) is open, like a JWKS: it holds public keys only, which
//! receivers fetch to verify `v1a` signatures, and a receiver has no API key. It may be cached for five
//! minutes: a rotation's grace period (24 hours by default) leaves receivers ample time to see a new key.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use webhooks_dispatch::signing::{SignatureScheme, SigningSecret};
use webhooks_dispatch::{EndpointKey, KeySet, RotateSecret};

use super::{ApiError, ApiJson, ApiPath, Shared};
use crate::config::parse_duration_or_zero;

/// How long a receiver (or a proxy) may reuse a key set: see the module documentation.
pub const KEY_SET_CACHE_CONTROL: &str = "public, max-age=300";

/// A `signature` field: `None` when absent; 400 `invalid_input` for a name that is not a scheme's.
pub(super) fn scheme(name: Option<&str>) -> Result<Option<SignatureScheme>, ApiError> {
    name.map(|name| {
        SignatureScheme::parse(name)
            .ok_or_else(|| ApiError::invalid_input("signature must be hmac-sha256 or ed25519"))
    })
    .transpose()
}

/// `POST /v1/endpoints/{id}/rotate-secret` body: every field optional.
///
/// No `Debug`: `secret`, when given, is a signing key.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// A `whsec_…` or `whsk_…` key to use instead of a generated one.
    #[serde(default)]
    secret: Option<String>,
    /// The scheme of a generated key; default: the endpoint's current one.
    #[serde(default)]
    signature: Option<String>,
    /// How long previous keys keep signing, e.g. `24h` (the default) or `0s`; at most 7 days.
    #[serde(default)]
    grace: Option<String>,
}

impl RotateBody {
    fn into_input(self) -> Result<RotateSecret, ApiError> {
        let new = self
            .secret
            .map(|text| {
                SigningSecret::parse(text.trim()).map_err(|_| {
                    ApiError::invalid_input(
                        "secret must be a whsec_… or whsk_… key (base64 after the prefix)",
                    )
                })
            })
            .transpose()?;
        let grace = self
            .grace
            .map(|text| {
                parse_duration_or_zero(&text).map_err(|why| ApiError::invalid_input(format!("grace: {why}")))
            })
            .transpose()?;
        Ok(RotateSecret {
            new,
            signature: scheme(self.signature.as_deref())?,
            grace,
        })
    }
}

/// `POST /v1/endpoints/{id}/rotate-secret` response: the new key, and its HMAC secret this once.
#[derive(Serialize)]
pub struct Rotated {
    key: EndpointKey,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

/// Gives an endpoint a new signing key → 200. The previous keys keep signing for the grace period.
pub async fn rotate(
    State(state): State<Shared>,
    ApiPath(id): ApiPath,
    ApiJson(body): ApiJson<RotateBody>,
) -> Result<Json<Rotated>, ApiError> {
    let input = body.into_input()?;
    let grace = input.grace;
    let rotated = state.dispatcher.rotate_secret(&id, input).await?;
    // Ids, scheme and grace only: the secret goes to the caller, never to the log.
    tracing::info!(
        endpoint_id = %id,
        key_id = %rotated.key.id,
        algorithm = rotated.key.algorithm.as_str(),
        grace_secs = grace.map(|g| g.as_secs()),
        "endpoint signing key rotated"
    );
    Ok(Json(Rotated {
        key: rotated.key,
        secret: rotated.secret.map(|s| s.expose().to_owned()),
    }))
}

/// `POST /v1/endpoints/{id}/expire-previous-secrets` response.
#[derive(Serialize)]
pub struct Expired {
    expired: u64,
}

/// Ends the grace period of every previous key now (after a leak) → 200 with how many ended.
pub async fn expire_previous(
    State(state): State<Shared>,
    ApiPath(id): ApiPath,
) -> Result<Json<Expired>, ApiError> {
    let expired = state.dispatcher.expire_previous_secrets(&id).await?;
    tracing::info!(endpoint_id = %id, expired, "previous endpoint signing keys expired by request");
    Ok(Json(Expired { expired }))
}

/// A list of keys.
#[derive(Serialize)]
pub struct KeyList {
    data: Vec<EndpointKey>,
}

/// Every unexpired key of an endpoint, newest (the current one) first, without secrets.
pub async fn list(State(state): State<Shared>, ApiPath(id): ApiPath) -> Result<Json<KeyList>, ApiError> {
    let data = state.dispatcher.endpoint_keys(&id).await?;
    Ok(Json(KeyList { data }))
}

/// The endpoint's unexpired ed25519 keys: what its receiver verifies `v1a` signatures with.
pub async fn public_keys(
    State(state): State<Shared>,
    ApiPath(id): ApiPath,
) -> Result<Json<KeyList>, ApiError> {
    let mut data = state.dispatcher.endpoint_keys(&id).await?;
    data.retain(|k| k.algorithm == SignatureScheme::Ed25519 && k.public_key.is_some());
    Ok(Json(KeyList { data }))
}

/// An owner's key set (open: public keys only), cacheable for [`KEY_SET_CACHE_CONTROL`].
pub async fn key_set(
    State(state): State<Shared>,
    ApiPath(owner_id): ApiPath,
) -> Result<impl IntoResponse, ApiError> {
    let set: KeySet = state.dispatcher.owner_key_set(&owner_id).await?;
    Ok(([(header::CACHE_CONTROL, KEY_SET_CACHE_CONTROL)], Json(set)))
}
