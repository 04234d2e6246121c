//! Custom headers: what a receiver asks to be sent with every attempt (often its own `Authorization`).
//!
//! Their values are credentials of the receiver's, so they are treated like the signing secret: stored, sent,
//! and never shown again — not by `Debug`, not in errors, not in reads (an [`Endpoint`](crate::Endpoint)
//! lists the names only), not in attempt logs. Names that would let a header change what the signature
//! covers, how the body is framed, or where the request goes are refused.

use std::collections::BTreeMap;
use std::fmt;

use http::header::{HeaderName, HeaderValue};

use crate::error::DispatchError;

/// Most custom headers one endpoint may have.
pub const MAX_CUSTOM_HEADERS: usize = 20;
/// Longest custom header value, in bytes.
pub const MAX_HEADER_VALUE_BYTES: usize = 4096;
/// Longest custom header name, in bytes.
pub const MAX_HEADER_NAME_BYTES: usize = 256;

/// Names the sender owns: the Standard Webhooks headers, the body's framing, the destination, and the
/// hop-by-hop headers of RFC 9110 §7.6.1 (meaningless or dangerous end to end).
const RESERVED: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "host",
    "user-agent",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// Headers sent with every attempt to an endpoint. Names are case-insensitive and kept in lowercase; values
/// are secret (`Debug` shows the names only).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CustomHeaders(BTreeMap<String, String>);

impl CustomHeaders {
    /// No custom headers.
    pub fn new() -> Self {
        CustomHeaders::default()
    }

    /// Adds (or replaces) a header. Checked when the endpoint is registered or updated, not here.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(name.into().to_ascii_lowercase(), value.into());
        self
    }

    /// The header names, in order.
    pub fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks names and values and returns the stored form (a JSON object). The error names the offending
    /// header, never its value.
    pub(crate) fn to_stored(&self) -> Result<String, DispatchError> {
        if self.0.len() > MAX_CUSTOM_HEADERS {
            return Err(DispatchError::input("headers", "too many headers (at most 20)"));
        }
        for (name, value) in &self.0 {
            if name.len() > MAX_HEADER_NAME_BYTES || HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(DispatchError::input(
                    "headers",
                    "a header name is not a valid HTTP token",
                ));
            }
            if name.starts_with("webhook-") || RESERVED.contains(&name.as_str()) {
                return Err(DispatchError::input(
                    "headers",
                    "reserved header name (webhook-*, content-*, host, user-agent or hop-by-hop)",
                ));
            }
            if value.len() > MAX_HEADER_VALUE_BYTES || HeaderValue::from_str(value).is_err() {
                return Err(DispatchError::input(
                    "headers",
                    "a header value is longer than 4096 bytes or not valid in HTTP",
                ));
            }
        }
        serde_json::to_string(&self.0).map_err(|_| DispatchError::input("headers", "not serializable"))
    }

    /// The names of a stored header object, without reading the values out of it.
    pub(crate) fn stored_names(stored: &str) -> Option<Vec<String>> {
        Some(Self::from_stored(stored)?.names())
    }

    fn from_stored(stored: &str) -> Option<Self> {
        if stored == "{}" {
            return Some(CustomHeaders::new());
        }
        serde_json::from_str(stored).ok().map(CustomHeaders)
    }
}

impl fmt::Debug for CustomHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "[redacted]")))
            .finish()
    }
}

/// Custom headers ready to go on the wire, decoded once per claimed message. Values are marked sensitive,
/// so HTTP/2 never enters them into its compression tables.
#[derive(Clone, Default)]
pub(crate) struct WireHeaders(Vec<(HeaderName, HeaderValue)>);

impl WireHeaders {
    /// Decodes a stored header object. `None` if it is unusable (which registration and update prevent);
    /// the attempt is then refused rather than sent without the receiver's credentials.
    pub(crate) fn decode(stored: &str) -> Option<Self> {
        let headers = CustomHeaders::from_stored(stored)?;
        let mut out = Vec::with_capacity(headers.0.len());
        for (name, value) in headers.0 {
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            let mut value = HeaderValue::from_str(&value).ok()?;
            value.set_sensitive(true);
            out.push((name, value));
        }
        Some(WireHeaders(out))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &(HeaderName, HeaderValue)> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invariant7_custom_header_values_never_show_in_debug_or_errors() {
        let h = CustomHeaders::new().with("Authorization", "Bearer hunter2");
        assert!(!format!("{h:?}").contains("hunter2"));
        assert_eq!(h.names(), ["authorization"]);
        let bad = CustomHeaders::new().with("x-token", "hunter2\n");
        let err = bad.to_stored().unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn reserved_and_malformed_header_names_are_refused() {
        for name in [
            "webhook-id",
            "Webhook-Signature",
            "content-type",
            "Content-Length",
            "host",
            "transfer-encoding",
            "connection",
            "te",
            "upgrade",
            "bad name",
            "",
        ] {
            let h = CustomHeaders::new().with(name, "v");
            assert_eq!(h.to_stored().unwrap_err().code(), "invalid_input", "{name}");
        }
        let many = (0..21).fold(CustomHeaders::new(), |h, i| h.with(format!("x-{i}"), "v"));
        assert!(many.to_stored().is_err());
        let long = CustomHeaders::new().with("x-a", "v".repeat(MAX_HEADER_VALUE_BYTES + 1));
        assert!(long.to_stored().is_err());
    }

    #[test]
    fn stored_headers_round_trip_to_the_wire() {
        let h = CustomHeaders::new()
            .with("Authorization", "Bearer t")
            .with("X-Tenant", "acme");
        let stored = h.to_stored().unwrap();
        assert_eq!(
            CustomHeaders::stored_names(&stored).unwrap(),
            ["authorization", "x-tenant"]
        );
        let wire = WireHeaders::decode(&stored).unwrap();
        let pairs: Vec<_> = wire
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    v.to_str().unwrap().to_owned(),
                    v.is_sensitive(),
                )
            })
            .collect();
        assert_eq!(
            pairs,
            [
                ("authorization".to_owned(), "Bearer t".to_owned(), true),
                ("x-tenant".to_owned(), "acme".to_owned(), true)
            ]
        );
        assert!(WireHeaders::decode("{}").unwrap().iter().next().is_none());
        assert!(WireHeaders::decode("not json").is_none());
    }
}
