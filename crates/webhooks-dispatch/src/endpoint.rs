//! Endpoint registration input, validation and records.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{DispatchError, StorageError};
use crate::headers::CustomHeaders;
use crate::keys::EndpointKey;
use crate::signing::{EndpointSecret, SignatureScheme};
use crate::ssrf::{vet, AddressPolicy, Destination, Resolver, VetError};
use crate::store::Row;

/// Longest accepted `owner_id`, in characters.
pub const MAX_OWNER_ID_CHARS: usize = 512;
/// Longest accepted endpoint URL, in characters.
pub const MAX_URL_CHARS: usize = 2048;
/// Longest accepted event type, in characters.
pub const MAX_EVENT_TYPE_CHARS: usize = 256;
/// Most event types one endpoint may subscribe to.
pub const MAX_EVENT_TYPES: usize = 64;
/// Longest accepted description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Most metadata entries one endpoint may carry.
pub const MAX_METADATA_ENTRIES: usize = 50;
/// Longest metadata key, in characters.
pub const MAX_METADATA_KEY_CHARS: usize = 256;
/// Longest metadata value, in characters.
pub const MAX_METADATA_VALUE_CHARS: usize = 1024;

/// Input to [`Dispatcher::register_endpoint`](crate::Dispatcher::register_endpoint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEndpoint {
    /// Your customer's id; opaque to the dispatcher. Non-blank, at most 512 characters, without control or
    /// bidirectional formatting characters.
    pub owner_id: String,
    /// `https://` URL to POST webhooks to. At most 2048 characters (also once normalized), without control or
    /// bidirectional formatting characters; must resolve only to allowed addresses. Stored normalized.
    pub url: String,
    /// Event types to deliver; `None` (or empty) means every type. At most 64, each non-blank and at most
    /// 256 characters; stored deduplicated and sorted.
    pub event_types: Option<Vec<String>>,
    /// Free text for the people operating it; at most 1024 characters.
    pub description: String,
    /// String pairs for the application's own use (at most 50; keys up to 256 characters, values up to 1024).
    pub metadata: BTreeMap<String, String>,
    /// Headers sent with every attempt (for example the receiver's own `Authorization`); their values are
    /// secret and never read back.
    pub headers: CustomHeaders,
    /// How its deliveries are signed (default HMAC-SHA256, `v1`); ed25519 (`v1a`) lets receivers verify
    /// with a public key, so they can never forge a webhook themselves.
    pub signature: SignatureScheme,
}

impl NewEndpoint {
    /// An endpoint receiving every event type.
    pub fn new(owner_id: impl Into<String>, url: impl Into<String>) -> Self {
        NewEndpoint {
            owner_id: owner_id.into(),
            url: url.into(),
            event_types: None,
            description: String::new(),
            metadata: BTreeMap::new(),
            headers: CustomHeaders::new(),
            signature: SignatureScheme::HmacSha256,
        }
    }

    /// Sets the signature scheme.
    pub fn signature(mut self, scheme: SignatureScheme) -> Self {
        self.signature = scheme;
        self
    }

    /// Sets the description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Sets the custom headers.
    pub fn headers(mut self, headers: CustomHeaders) -> Self {
        self.headers = headers;
        self
    }

    /// Restricts the endpoint to these event types.
    pub fn event_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types = Some(types.into_iter().map(Into::into).collect());
        self
    }
}

/// The result of registration. The secret is returned here once and never again by any other call.
#[derive(Clone, Debug)]
pub struct RegisteredEndpoint {
    /// `ep_…` id to dispatch to.
    pub id: String,
    /// The HMAC signing secret to give the endpoint's owner; its `Debug`/`Display` redact it. `None` for an
    /// ed25519 endpoint: its signing key never leaves the sender, and receivers verify with
    /// [`key`](Self::key)'s public key.
    pub secret: Option<EndpointSecret>,
    /// Its current signing key (with the public key of an ed25519 endpoint).
    pub key: EndpointKey,
}

/// A stored endpoint, without its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// `ep_…` id.
    pub id: String,
    /// Owner id given at registration.
    pub owner_id: String,
    /// Destination URL, as the URL parser serialized it when it was vetted (lowercase scheme and host, no
    /// default port, dot segments resolved, non-ASCII percent-encoded): exactly what deliveries go to.
    pub url: String,
    /// Subscribed event types; empty means all.
    pub event_types: Vec<String>,
    /// Registration time.
    pub created_at: DateTime<Utc>,
    /// Whether it receives messages.
    pub status: EndpointStatus,
    /// Why it was disabled, while it is.
    pub disabled_reason: Option<DisabledReason>,
    /// When it was disabled, while it is.
    pub disabled_at: Option<DateTime<Utc>>,
    /// Free text for its operators.
    pub description: String,
    /// The application's string pairs.
    pub metadata: BTreeMap<String, String>,
    /// The names of its custom headers (their values are never read back).
    pub header_names: Vec<String>,
}

/// Whether an endpoint receives messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointStatus {
    /// Messages are accepted and delivered.
    Active,
    /// New messages are refused (`endpoint_disabled`) and events skip it; its pending messages wait,
    /// unattempted and keeping their attempt count, until it is enabled.
    Disabled,
}

impl EndpointStatus {
    /// The stored (and wire) form.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointStatus::Active => "active",
            EndpointStatus::Disabled => "disabled",
        }
    }

    /// The status named by its stored (and wire) form, if any.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(EndpointStatus::Active),
            "disabled" => Some(EndpointStatus::Disabled),
            _ => None,
        }
    }
}

/// Why an endpoint is disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DisabledReason {
    /// An operator disabled it.
    Manual,
    /// Its receiver answered `410 Gone`.
    Gone,
    /// It kept failing for longer than the configured limit.
    Failing,
}

impl DisabledReason {
    /// The stored (and wire) form.
    pub fn as_str(self) -> &'static str {
        match self {
            DisabledReason::Manual => "manual",
            DisabledReason::Gone => "gone",
            DisabledReason::Failing => "failing",
        }
    }

    /// Column `i` of `row`, which holds a reason or NULL.
    pub(crate) fn from_column(row: &Row, i: usize) -> Result<Option<Self>, StorageError> {
        match row.opt_text(i)? {
            Some(r) => Self::parse(&r)
                .map(Some)
                .ok_or_else(|| StorageError::decode("disabled reason")),
            None => Ok(None),
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "manual" => Some(DisabledReason::Manual),
            "gone" => Some(DisabledReason::Gone),
            "failing" => Some(DisabledReason::Failing),
            _ => None,
        }
    }
}

/// How many columns `Endpoint::from_row` reads; a statement may return more after them.
pub(crate) const ENDPOINT_COLUMNS: usize = 11;

impl Endpoint {
    /// Decodes the columns every endpoint read selects (`endpoint_columns!` of each engine): id, owner_id,
    /// url, event_types, created_at, status, disabled_reason, disabled_at, description, metadata, headers.
    pub(crate) fn from_row(row: &Row) -> Result<Endpoint, StorageError> {
        let status =
            EndpointStatus::parse(&row.text(5)?).ok_or_else(|| StorageError::decode("endpoint status"))?;
        let disabled_reason = DisabledReason::from_column(row, 6)?;
        Ok(Endpoint {
            id: row.text(0)?,
            owner_id: row.text(1)?,
            url: row.text(2)?,
            event_types: row.text_array(3)?,
            created_at: row.timestamp(4)?,
            status,
            disabled_reason,
            disabled_at: row.opt_timestamp(7)?,
            description: row.text(8)?,
            metadata: serde_json::from_str(&row.text(9)?)
                .map_err(|_| StorageError::decode("endpoint metadata"))?,
            header_names: CustomHeaders::stored_names(&row.text(10)?)
                .ok_or_else(|| StorageError::decode("endpoint headers"))?,
        })
    }
}

/// Whether `c` has no business in an owner id or an endpoint URL: C0 and C1 controls and DEL
/// (`char::is_control`), which terminals and log viewers act on, the line and paragraph separators, which
/// split a log line as a newline does, and the bidirectional formatting characters (marks, embeddings,
/// overrides, isolates), which make text display in another order than it is stored.
pub(crate) fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Checks an owner id, wherever one is an input: non-blank, at most 512 characters, no forbidden character.
pub(crate) fn check_owner_id(owner_id: &str) -> Result<(), DispatchError> {
    check_chars("owner_id", owner_id, MAX_OWNER_ID_CHARS, false)?;
    if owner_id.chars().any(is_forbidden_char) {
        return Err(DispatchError::input(
            "owner_id",
            "must not contain control or bidirectional formatting characters",
        ));
    }
    Ok(())
}

/// Checks a description.
pub(crate) fn check_description(description: &str) -> Result<(), DispatchError> {
    check_chars("description", description, MAX_DESCRIPTION_CHARS, true)
}

/// Checks metadata and returns its stored form (a JSON object).
pub(crate) fn stored_metadata(metadata: &BTreeMap<String, String>) -> Result<String, DispatchError> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(DispatchError::input("metadata", "too many entries (at most 50)"));
    }
    for (key, value) in metadata {
        check_chars("metadata", key, MAX_METADATA_KEY_CHARS, false)?;
        check_chars("metadata", value, MAX_METADATA_VALUE_CHARS, true)?;
    }
    serde_json::to_string(metadata).map_err(|_| DispatchError::input("metadata", "not serializable"))
}

pub(crate) fn check_chars(
    field: &'static str,
    value: &str,
    max: usize,
    allow_blank: bool,
) -> Result<(), DispatchError> {
    if !allow_blank && value.trim().is_empty() {
        return Err(DispatchError::input(field, "must not be blank"));
    }
    if value.chars().count() > max {
        return Err(DispatchError::input(field, "too long"));
    }
    Ok(())
}

/// Validates the event type list and normalises it: deduplicated, sorted.
pub(crate) fn normalize_event_types(types: Option<&[String]>) -> Result<Vec<String>, DispatchError> {
    let types = types.unwrap_or_default();
    if types.len() > MAX_EVENT_TYPES {
        return Err(DispatchError::input("event_types", "too many event types"));
    }
    for t in types {
        check_chars("event_types", t, MAX_EVENT_TYPE_CHARS, false)?;
    }
    let mut out = types.to_vec();
    out.sort();
    out.dedup();
    Ok(out)
}

fn invalid_url(reason: &str) -> DispatchError {
    DispatchError::InvalidUrl {
        reason: reason.to_owned(),
    }
}

/// Checks the URL's shape and its destination, and returns the form to store: the parser's serialization of
/// the URL that was vetted (scheme and host lowercased, default port dropped, dot segments resolved,
/// non-ASCII and spaces percent-encoded), so what is stored, shown and delivered to is exactly what was
/// checked. Done at registration so a bad URL is refused to the caller's face; delivery checks again,
/// because DNS answers change.
///
/// A raw forbidden character ([`is_forbidden_char`]) anywhere is refused rather than left to the parser,
/// which would silently drop tabs and newlines and percent-encode the rest, storing something other than
/// what the caller wrote. Percent-encoded ones are inert text: in the host the parser refuses them after
/// decoding, in the path and query they are the receiver's business and are kept as written.
/// The refusal of a URL holding a forbidden character (a shape refusal: see `is_destination_refusal`).
pub(crate) const FORBIDDEN_CHARS_IN_URL: &str =
    "url must not contain control or bidirectional formatting characters";

pub(crate) async fn vet_url(
    url: &str,
    policy: &AddressPolicy,
    resolver: &dyn Resolver,
) -> Result<String, DispatchError> {
    if url.chars().count() > MAX_URL_CHARS {
        return Err(invalid_url("url too long"));
    }
    if url.chars().any(is_forbidden_char) {
        return Err(invalid_url(FORBIDDEN_CHARS_IN_URL));
    }
    let dest = Destination::parse(url).map_err(|e| invalid_url(&e.to_string()))?;
    let normalized = dest.url().as_str();
    // Percent-encoding can lengthen it: the limit holds for what is stored.
    if normalized.len() > MAX_URL_CHARS {
        return Err(invalid_url("url too long"));
    }
    vet(policy, resolver, &dest).await.map_err(|e| match e {
        VetError::Refused(r) => invalid_url(&r.to_string()),
        VetError::Lookup(e) if e.kind() == std::io::ErrorKind::TimedOut => DispatchError::DnsTimeout,
        _ => invalid_url("dns lookup failed"),
    })?;
    Ok(normalized.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssrf::StaticResolver;
    use futures_util::FutureExt as _;
    use proptest::prelude::*;

    /// Every character [`is_forbidden_char`] names: C0, DEL, C1, and the bidirectional and line-breaking
    /// formatting characters.
    fn forbidden_char() -> impl Strategy<Value = char> {
        prop_oneof![
            0u32..0x20,
            Just(0x7f),
            0x80u32..0xa0,
            Just(0x061c),
            Just(0x200e),
            Just(0x200f),
            0x2028u32..=0x202e,
            0x2066u32..=0x2069,
        ]
        .prop_map(|c| char::from_u32(c).unwrap())
    }

    proptest! {
        /// A forbidden character anywhere in an owner id, or anywhere in a URL (host, path, query), is refused
        /// with the typed error, before any lookup (the future is ready at once) and so before any SQL.
        #[test]
        fn invariant1_forbidden_characters_are_refused_in_owner_ids_and_urls(
            before in "\\PC{0,12}", after in "\\PC{0,12}", bad in forbidden_char(),
        ) {
            let text = format!("{before}{bad}{after}");
            prop_assert_eq!(check_owner_id(&text).unwrap_err().code(), "invalid_input");
            let resolver = StaticResolver::new();
            for url in [
                format!("https://{text}.test/hook"),
                format!("https://a.test/{text}"),
                format!("https://a.test/hook?q={text}"),
                format!("{text}https://a.test/"),
            ] {
                let verdict = vet_url(&url, &AddressPolicy::default(), &resolver)
                    .now_or_never()
                    .expect("refused without waiting for anything");
                prop_assert_eq!(verdict.unwrap_err().code(), "invalid_url", "{:?}", url);
            }
            prop_assert_eq!(resolver.lookups(), 0);
        }
    }

    #[test]
    fn owner_ids_in_any_script_and_with_punctuation_are_accepted() {
        for owner in ["customer_42", "Zoë Ünal", "客户-7", "ربح", "a b/c:d@e", "🙂"] {
            check_owner_id(owner).unwrap_or_else(|e| panic!("{owner:?}: {e}"));
        }
    }

    #[test]
    fn event_types_are_deduplicated_and_sorted() {
        let t = vec!["b".to_owned(), "a".to_owned(), "b".to_owned()];
        assert_eq!(normalize_event_types(Some(&t)).unwrap(), ["a", "b"]);
        assert!(normalize_event_types(None).unwrap().is_empty());
    }

    #[test]
    fn invariant1_event_type_limits() {
        let many: Vec<String> = (0..65).map(|i| i.to_string()).collect();
        assert_eq!(
            normalize_event_types(Some(&many)).unwrap_err().code(),
            "invalid_input"
        );
        let blank = vec![" ".to_owned()];
        assert!(normalize_event_types(Some(&blank)).is_err());
        let long = vec!["x".repeat(257)];
        assert!(normalize_event_types(Some(&long)).is_err());
        let ok = vec!["é".repeat(256)];
        assert!(
            normalize_event_types(Some(&ok)).is_ok(),
            "limits count characters, not bytes"
        );
    }
}
