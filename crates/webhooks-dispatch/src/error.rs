//! Typed errors with stable codes.
//!
//! Every public failure is a [`DispatchError`]. Its `Display` text is safe to show to an API caller: it never
//! contains a driver message, a SQL fragment, or an endpoint secret. Storage failures keep the raw driver
//! error reachable only through [`std::error::Error::source`], for operators' logs.

use std::error::Error as StdError;
use std::fmt;

/// Why a call was refused or failed.
///
/// Match on [`DispatchError::code`] for a stable, machine-readable identifier; the enum is non-exhaustive so
/// new failure kinds can be added without breaking callers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// An input field is missing, blank, too long or out of range. `field` names it; `reason` says why.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The offending input field, e.g. `owner_id`.
        field: &'static str,
        /// A short human-readable reason, never echoing the value.
        reason: &'static str,
    },
    /// The endpoint URL is malformed, not https, or points at a refused destination.
    #[error("invalid url: {reason}")]
    InvalidUrl {
        /// A short human-readable reason (e.g. "url scheme must be https", "address refused: loopback").
        reason: String,
    },
    /// The endpoint URL's host name did not resolve within the lookup deadline
    /// ([`DispatcherBuilder::dns_timeout`](crate::DispatcherBuilder::dns_timeout)), waiting for a lookup slot
    /// included. Nothing was stored or changed; the same call may well succeed later.
    #[error("dns lookup timed out; try again later")]
    DnsTimeout,
    /// The payload could not be serialized to JSON or is larger than the limit.
    #[error("invalid payload: {reason}")]
    InvalidPayload {
        /// A short human-readable reason.
        reason: &'static str,
    },
    /// No endpoint has this id.
    #[error("unknown endpoint")]
    UnknownEndpoint,
    /// No message has this id.
    #[error("unknown message")]
    UnknownMessage,
    /// No event has this id.
    #[error("unknown event")]
    UnknownEvent,
    /// The endpoint is disabled (by an operator, or because its receiver is gone or kept failing): nothing
    /// new is accepted for it until it is enabled again.
    #[error("endpoint is disabled")]
    EndpointDisabled,
    /// The idempotency key was used before for this endpoint with another event type or payload; the first
    /// message stands, and this one is refused rather than silently answered with the first one's id.
    #[error("idempotency key already used with a different message")]
    IdempotencyConflict,
    /// The endpoint subscribed to a list of event types that does not include this one.
    #[error("endpoint is not subscribed to this event type")]
    EventTypeNotSubscribed,
    /// One message of a [`dispatch_many`](crate::Dispatcher::dispatch_many) batch was refused, so none was
    /// inserted. `code()` and `http_status()` are those of the inner error.
    #[error("message {index}: {error}")]
    InBatch {
        /// Position of the refused message in the input.
        index: usize,
        /// Why it was refused.
        error: Box<DispatchError>,
    },
    /// A stored key could not be sealed or opened by the dispatcher's
    /// [`SecretCipher`](crate::keyring::SecretCipher) (a master key missing from the ring, or a tampered row).
    /// The message names no key material.
    #[error("secret encryption failed: {0}")]
    Cipher(#[source] crate::keyring::CipherError),
    /// The database failed. The message is generic; the driver error is only in `source()`.
    #[error("storage error")]
    Storage(#[source] StorageError),
    /// [`migrate`](crate::Dispatcher::migrate) found a schema migrated by a newer release of this library: its
    /// tables may no longer mean what this release expects, so it is refused rather than used.
    #[error(
        "the database schema is at version {found}, newer than the newest this release of webhooks-dispatch \
         knows ({supported}); run a release that knows it, or point this one at another database"
    )]
    SchemaTooNew {
        /// The newest migration version recorded in the database.
        found: i64,
        /// The newest migration version this release knows.
        supported: u32,
    },
}

impl DispatchError {
    /// Stable identifier, suitable for API responses and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            DispatchError::InvalidInput { .. } => "invalid_input",
            DispatchError::InvalidUrl { .. } => "invalid_url",
            DispatchError::DnsTimeout => "dns_timeout",
            DispatchError::InvalidPayload { .. } => "invalid_payload",
            DispatchError::UnknownEndpoint => "unknown_endpoint",
            DispatchError::UnknownMessage => "unknown_message",
            DispatchError::UnknownEvent => "unknown_event",
            DispatchError::EndpointDisabled => "endpoint_disabled",
            DispatchError::EventTypeNotSubscribed => "event_type_not_subscribed",
            DispatchError::IdempotencyConflict => "idempotency_conflict",
            DispatchError::InBatch { error, .. } => error.code(),
            DispatchError::Storage(_) => "storage",
            DispatchError::Cipher(_) => "cipher",
            DispatchError::SchemaTooNew { .. } => "schema_too_new",
        }
    }

    /// The HTTP status an API built on this library should answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            DispatchError::InvalidInput { .. }
            | DispatchError::InvalidUrl { .. }
            | DispatchError::InvalidPayload { .. }
            | DispatchError::EventTypeNotSubscribed => 400,
            DispatchError::UnknownEndpoint | DispatchError::UnknownMessage | DispatchError::UnknownEvent => {
                404
            }
            DispatchError::IdempotencyConflict | DispatchError::EndpointDisabled => 409,
            DispatchError::InBatch { error, .. } => error.http_status(),
            DispatchError::Storage(_) | DispatchError::SchemaTooNew { .. } | DispatchError::Cipher(_) => 500,
            DispatchError::DnsTimeout => 503,
        }
    }

    /// Whether this is an `invalid_url` refusal because of where the URL leads — its host resolved to a
    /// refused address, or did not resolve — rather than because of its shape (not https, malformed,
    /// credentials, a fragment, too long). The reason of a destination refusal tells how a host name
    /// resolves on this side, so a service answering tenants should give every one of them the same generic
    /// text and keep the reason for its operators' log; shape refusals are the caller's own URL and may be
    /// shown as they are.
    ///
    /// Every `invalid_url` that is not a known shape refusal counts as a destination refusal, so a refusal
    /// added later errs on the side of the generic answer.
    pub fn is_destination_refusal(&self) -> bool {
        use crate::ssrf::UrlError;
        match self {
            DispatchError::InvalidUrl { reason } => {
                let shape = [
                    UrlError::Malformed,
                    UrlError::NotHttps,
                    UrlError::MissingHost,
                    UrlError::Credentials,
                    UrlError::Fragment,
                ];
                // "url too long" is endpoint.rs's length refusal (`vet_url`); the test below pins it.
                reason != "url too long"
                    && reason != crate::endpoint::FORBIDDEN_CHARS_IN_URL
                    && !shape.iter().any(|e| *reason == e.to_string())
            }
            DispatchError::InBatch { error, .. } => error.is_destination_refusal(),
            _ => false,
        }
    }

    pub(crate) fn input(field: &'static str, reason: &'static str) -> Self {
        DispatchError::InvalidInput { field, reason }
    }

    pub(crate) fn in_batch(index: usize, error: DispatchError) -> Self {
        DispatchError::InBatch {
            index,
            error: Box::new(error),
        }
    }
}

impl From<StorageError> for DispatchError {
    fn from(e: StorageError) -> Self {
        DispatchError::Storage(e)
    }
}

/// What kind of database failure happened, classified by SQLSTATE (never by message text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageErrorKind {
    /// SQLSTATE 23505.
    UniqueViolation,
    /// SQLSTATE 23503.
    ForeignKeyViolation,
    /// SQLSTATE 40001 / 40P01: safe to retry the transaction.
    SerializationFailure,
    /// SQLSTATE class 08, or the driver lost or could not open its connection.
    Connection,
    /// SQLSTATE 42P01 (undefined table): usually `migrate()` was not run.
    UndefinedTable,
    /// A value came back with a type or shape the core did not expect.
    Decode,
    /// Anything else.
    Other,
}

impl StorageErrorKind {
    /// Classifies a five-character SQLSTATE code.
    pub fn from_sqlstate(code: &str) -> Self {
        match code {
            "23505" => StorageErrorKind::UniqueViolation,
            "23503" => StorageErrorKind::ForeignKeyViolation,
            "40001" | "40P01" => StorageErrorKind::SerializationFailure,
            "42P01" => StorageErrorKind::UndefinedTable,
            c if c.starts_with("08") => StorageErrorKind::Connection,
            _ => StorageErrorKind::Other,
        }
    }
}

/// A database failure reported by an [`Executor`](crate::store::Executor) adapter.
///
/// `Display` is deliberately generic ("database error: unique_violation"); the driver's own error, which may
/// contain SQL, values or connection strings, is kept as the `source`.
pub struct StorageError {
    kind: StorageErrorKind,
    sqlstate: Option<String>,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl StorageError {
    /// Wraps a driver error, classifying it by its SQLSTATE when it has one.
    pub fn from_driver(
        sqlstate: Option<&str>,
        connection_lost: bool,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        let kind = match sqlstate {
            Some(code) => StorageErrorKind::from_sqlstate(code),
            None if connection_lost => StorageErrorKind::Connection,
            None => StorageErrorKind::Other,
        };
        StorageError {
            kind,
            sqlstate: sqlstate.map(str::to_owned),
            source: Some(source.into()),
        }
    }

    /// A result row did not have the expected shape.
    pub fn decode(what: &'static str) -> Self {
        StorageError {
            kind: StorageErrorKind::Decode,
            sqlstate: None,
            source: Some(what.into()),
        }
    }

    /// The same classification for another caller of a shared statement (group commit), with a generic
    /// source: the driver's error itself is not shareable and stays with the first.
    pub(crate) fn copy_for_another_caller(&self) -> Self {
        StorageError {
            kind: self.kind,
            sqlstate: self.sqlstate.clone(),
            source: Some("the batch insert this dispatch joined failed".into()),
        }
    }

    /// The classified kind.
    pub fn kind(&self) -> StorageErrorKind {
        self.kind
    }

    /// The SQLSTATE the database reported, if any.
    pub fn sqlstate(&self) -> Option<&str> {
        self.sqlstate.as_deref()
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            StorageErrorKind::UniqueViolation => "unique_violation",
            StorageErrorKind::ForeignKeyViolation => "foreign_key_violation",
            StorageErrorKind::SerializationFailure => "serialization_failure",
            StorageErrorKind::Connection => "connection",
            StorageErrorKind::UndefinedTable => "undefined_table",
            StorageErrorKind::Decode => "decode",
            StorageErrorKind::Other => "other",
        };
        write!(f, "database error: {kind}")
    }
}

// Debug mirrors Display plus the SQLSTATE: `{:?}` of a DispatchError ends up in logs, and the driver's text may
// carry values, so it is left to `source()`.
impl fmt::Debug for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageError")
            .field("kind", &self.kind)
            .field("sqlstate", &self.sqlstate)
            .finish_non_exhaustive()
    }
}

impl StdError for StorageError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Catches: a shape refusal classified as a destination refusal (its useful text hidden from the caller)
    // or, worse, a refusal that depends on DNS classified as a shape one (its text then tells the caller how
    // an internal name resolves).
    #[tokio::test]
    async fn destination_refusals_are_told_apart_from_shape_refusals() {
        use crate::ssrf::{AddressPolicy, StaticResolver};
        let resolver = StaticResolver::new();
        resolver.insert("internal.test", vec!["10.0.0.7".parse().unwrap()]);
        let policy = AddressPolicy::default();
        let refusal = |url: String| {
            let (policy, resolver) = (&policy, &resolver);
            async move {
                crate::endpoint::vet_url(&url, policy, resolver)
                    .await
                    .expect_err("refused")
            }
        };
        for url in [
            "https://internal.test/hook",
            "https://unknown.test/hook",
            "https://127.0.0.1/hook",
            "https://[::1]/hook",
        ] {
            let e = refusal(url.to_owned()).await;
            assert!(e.is_destination_refusal(), "{url}: {e}");
            assert!(
                DispatchError::in_batch(3, e).is_destination_refusal(),
                "{url} in a batch"
            );
        }
        for url in [
            "http://internal.test/hook".to_owned(),
            "not a url".to_owned(),
            "https://u:p@internal.test/hook".to_owned(),
            "https://internal.test/hook#x".to_owned(),
            format!("https://internal.test/{}", "a".repeat(3000)),
            "https://internal.test/\u{202e}hook".to_owned(),
        ] {
            let e = refusal(url.clone()).await;
            assert_eq!(e.code(), "invalid_url", "{url}");
            assert!(!e.is_destination_refusal(), "{url}: {e}");
        }
        assert!(!DispatchError::UnknownEndpoint.is_destination_refusal());
    }

    #[test]
    fn sqlstate_classification_uses_codes_not_messages() {
        assert_eq!(
            StorageErrorKind::from_sqlstate("23505"),
            StorageErrorKind::UniqueViolation
        );
        assert_eq!(
            StorageErrorKind::from_sqlstate("08006"),
            StorageErrorKind::Connection
        );
        assert_eq!(
            StorageErrorKind::from_sqlstate("40P01"),
            StorageErrorKind::SerializationFailure
        );
        assert_eq!(StorageErrorKind::from_sqlstate("XX000"), StorageErrorKind::Other);
    }

    #[test]
    fn storage_error_display_and_debug_hide_driver_text() {
        let raw = std::io::Error::other("password=hunter2 at INSERT INTO secret_table");
        let err = DispatchError::from(StorageError::from_driver(Some("23505"), false, raw));
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("INSERT"), "{text}");
        }
        assert_eq!(err.code(), "storage");
        assert_eq!(err.http_status(), 500);
        let source = err.source().and_then(|s| s.source()).expect("driver error kept");
        assert!(source.to_string().contains("hunter2"));
    }

    #[test]
    fn schema_too_new_names_both_versions_and_has_a_stable_code() {
        let err = DispatchError::SchemaTooNew {
            found: 7,
            supported: 2,
        };
        assert_eq!(err.code(), "schema_too_new");
        assert_eq!(err.http_status(), 500);
        let text = err.to_string();
        assert!(text.contains("version 7") && text.contains("(2)"), "{text}");
    }
}
