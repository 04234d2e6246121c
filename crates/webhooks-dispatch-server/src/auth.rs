//! Bearer API keys for `/v1`.
//!
//! Keys come from the configuration. A request must send `Authorization: Bearer <key>`; anything else gets
//! 401 with `{"error": {"code": "unauthorized", …}}` before its body is read. Comparison is constant-time:
//! both sides are hashed with SHA-256 first (so the comparison does not even depend on the key's length) and
//! every configured key is compared, without stopping at the first match, with `subtle`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::api::ApiError;
use crate::config::ApiKeys;

/// The accepted keys, kept only as SHA-256 digests.
#[derive(Clone)]
pub struct Keys {
    digests: Arc<[[u8; 32]]>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys([{} redacted])", self.digests.len())
    }
}

impl Keys {
    /// Digests the configured keys.
    pub fn new(keys: &ApiKeys) -> Self {
        Keys {
            digests: keys.0.iter().map(|k| digest(k.as_bytes())).collect(),
        }
    }

    /// Whether `presented` is one of the keys, in time independent of which key (if any) it matches.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let candidate = digest(presented);
        let mut any = Choice::from(0);
        for key in self.digests.iter() {
            any |= key.ct_eq(&candidate);
        }
        any.into()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive, per RFC 7235).
fn bearer(request: &Request) -> Option<&[u8]> {
    let value = request.headers().get(AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Middleware: rejects requests without a valid key.
pub async fn require_key(State(keys): State<Keys>, request: Request, next: Next) -> Response {
    match bearer(&request) {
        Some(token) if keys.accepts(token) => next.run(request).await,
        _ => ApiError::unauthorized().into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_configured_keys() {
        let keys = Keys::new(&ApiKeys(vec!["a".repeat(16), "b".repeat(20)]));
        assert!(keys.accepts("a".repeat(16).as_bytes()));
        assert!(keys.accepts("b".repeat(20).as_bytes()));
        assert!(!keys.accepts("a".repeat(15).as_bytes()));
        assert!(!keys.accepts(b""));
        assert!(!Keys::new(&ApiKeys::default()).accepts(b""));
        assert!(!format!("{keys:?}").contains("aaaa"));
    }

    #[test]
    fn bearer_header_parsing() {
        let req = |v: &str| {
            Request::builder()
                .header(AUTHORIZATION, v)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        assert_eq!(bearer(&req("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&req("bearer  abc ")), Some(&b"abc"[..]));
        assert_eq!(bearer(&req("Basic abc")), None);
        assert_eq!(bearer(&req("Bearer")), None);
        assert_eq!(bearer(&req("Bearer ")), None);
    }
}
