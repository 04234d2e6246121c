//! Standard Webhooks signatures: signing for senders, [`verify`] and [`verify_ed25519`] for receivers.
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{body}`. Two schemes ([`SignatureScheme`]):
//! - `v1`, symmetric: the key is the base64-decoded part of the secret after `whsec_`; the header entry is
//!   `v1,` + base64(HMAC-SHA256).
//! - `v1a`, asymmetric: the sender signs with an ed25519 key (`whsk_`, [`Ed25519SigningKey`]) and the
//!   receiver verifies with its public key (`whpk_`, [`Ed25519PublicKey`]), which cannot sign; the header
//!   entry is `v1a,` + base64 of the 64-byte signature.
//!
//! The header may carry several space-separated entries ([`sign_all`]: during key rotation, or to offer both
//! schemes); a receiver accepts the message if any one of the scheme it checks matches and ignores the rest.

mod ed25519;
#[cfg(test)]
mod tests;

pub use ed25519::{Ed25519PublicKey, Ed25519SigningKey, PUBLIC_KEY_PREFIX, SIGNING_KEY_PREFIX};

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of every endpoint secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a generated secret (the Standard Webhooks minimum is 24; we use 32).
const SECRET_BYTES: usize = 32;
/// How far a receiver accepts a timestamp from its own clock, both ways, to bound replay.
pub const DEFAULT_TOLERANCE_SECS: i64 = 5 * 60;

/// An endpoint's signing secret (`whsec_…`).
///
/// `Debug` and `Display` print `whsec_[redacted]`: a secret must never reach logs, errors or attempt records.
/// Call [`EndpointSecret::expose`] at the one place that must hand it to the endpoint's owner.
#[derive(Clone, PartialEq, Eq)]
pub struct EndpointSecret(String);

impl EndpointSecret {
    /// Generates a secret from 32 bytes of the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut key = [0u8; SECRET_BYTES];
        // The OS CSPRNG failing means the machine cannot produce secrets at all; there is no safe fallback.
        getrandom::fill(&mut key).expect("operating system random number generator failed");
        EndpointSecret(format!("{SECRET_PREFIX}{}", BASE64.encode(key)))
    }

    /// Wraps an existing `whsec_` secret, checking that it decodes to a usable key.
    pub fn parse(secret: &str) -> Result<Self, InvalidSecret> {
        decode_key(secret)?;
        Ok(EndpointSecret(secret.to_owned()))
    }

    /// The secret text, to show once to the endpoint's owner or to store.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn key(&self) -> Result<Vec<u8>, InvalidSecret> {
        decode_key(&self.0)
    }
}

impl fmt::Debug for EndpointSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EndpointSecret(whsec_[redacted])")
    }
}

impl fmt::Display for EndpointSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("whsec_[redacted]")
    }
}

/// The secret is not `whsec_` followed by non-empty base64, nor a well-formed `whsk_` or `whpk_` key; or
/// [`sign_all`] was given no key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("secret is not a valid whsec_, whsk_ or whpk_ key")]
pub struct InvalidSecret;

fn decode_key(secret: &str) -> Result<Vec<u8>, InvalidSecret> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    match BASE64.decode(encoded) {
        Ok(key) if !key.is_empty() => Ok(key),
        _ => Err(InvalidSecret),
    }
}

/// What every signature covers, `{msg_id}.{timestamp}.{body}`, written down once for both schemes: HMAC takes
/// the pieces as they are, ed25519 needs them joined.
struct SignedContent<'a> {
    msg_id: &'a str,
    timestamp: String,
    body: &'a [u8],
}

impl<'a> SignedContent<'a> {
    fn new(msg_id: &'a str, timestamp: i64, body: &'a [u8]) -> Self {
        SignedContent {
            msg_id,
            timestamp: timestamp.to_string(),
            body,
        }
    }

    fn parts(&self) -> [&[u8]; 5] {
        [
            self.msg_id.as_bytes(),
            b".",
            self.timestamp.as_bytes(),
            b".",
            self.body,
        ]
    }

    fn joined(&self) -> Vec<u8> {
        self.parts().concat()
    }
}

fn mac(key: &[u8], content: &SignedContent<'_>) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("hmac accepts any key length");
    for part in content.parts() {
        mac.update(part);
    }
    mac
}

fn hmac_signature(secret: &EndpointSecret, content: &SignedContent<'_>) -> Result<String, InvalidSecret> {
    let key = secret.key()?;
    let tag = mac(&key, content).finalize().into_bytes();
    Ok(format!(
        "{},{}",
        SignatureScheme::HmacSha256.version(),
        BASE64.encode(tag)
    ))
}

/// The `webhook-signature` header value (`v1,<base64>`) for one delivery attempt.
pub fn sign(
    secret: &EndpointSecret,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, InvalidSecret> {
    hmac_signature(secret, &SignedContent::new(msg_id, timestamp, body))
}

/// The signature scheme of an endpoint key.
///
/// ```
/// use webhooks_dispatch::signing::SignatureScheme;
///
/// assert_eq!(SignatureScheme::parse("v1a"), Some(SignatureScheme::Ed25519));
/// assert_eq!(SignatureScheme::Ed25519.as_str(), "ed25519");
/// assert_eq!(SignatureScheme::default().version(), "v1");
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SignatureScheme {
    /// Standard Webhooks `v1`: HMAC-SHA256 under a shared `whsec_` secret.
    #[default]
    HmacSha256,
    /// Standard Webhooks `v1a`: ed25519 under a `whsk_` signing key, verified with its `whpk_` public key.
    Ed25519,
}

impl SignatureScheme {
    /// The scheme's name, `hmac-sha256` or `ed25519`, as stored and configured.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureScheme::HmacSha256 => "hmac-sha256",
            SignatureScheme::Ed25519 => "ed25519",
        }
    }

    /// Reads a name from [`SignatureScheme::as_str`]; `hmac` and the header versions `v1` and `v1a` are
    /// accepted too, since people configure the scheme by whichever name they have seen.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "hmac-sha256" | "hmac" | "v1" => Some(SignatureScheme::HmacSha256),
            "ed25519" | "v1a" => Some(SignatureScheme::Ed25519),
            _ => None,
        }
    }

    /// The version tag that starts the scheme's `webhook-signature` entries: `v1` or `v1a`.
    pub fn version(self) -> &'static str {
        match self {
            SignatureScheme::HmacSha256 => "v1",
            SignatureScheme::Ed25519 => "v1a",
        }
    }
}

/// One key that signs deliveries: an HMAC secret or an ed25519 signing key.
///
/// `Debug` and `Display` redact, as those of the keys inside do.
///
/// ```
/// use webhooks_dispatch::signing::{SignatureScheme, SigningSecret};
///
/// let key = SigningSecret::generate(SignatureScheme::Ed25519);
/// let stored = key.expose().to_owned();
/// assert_eq!(SigningSecret::parse(&stored).unwrap(), key);
/// assert!(key.public_key().is_some());
/// assert_eq!(SigningSecret::generate(SignatureScheme::HmacSha256).public_key(), None);
/// ```
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SigningSecret {
    /// A `whsec_` secret, signing `v1` entries.
    Hmac(EndpointSecret),
    /// A `whsk_` key, signing `v1a` entries.
    Ed25519(Ed25519SigningKey),
}

impl SigningSecret {
    /// Reads a key by its prefix: `whsk_` is an ed25519 key; anything else must be an HMAC secret as
    /// [`EndpointSecret::parse`] accepts it (`whsec_` and base64, which cannot contain the `_` of another
    /// prefix, so a `whpk_` public key given by mistake is refused).
    pub fn parse(text: &str) -> Result<Self, InvalidSecret> {
        if text.starts_with(SIGNING_KEY_PREFIX) {
            Ed25519SigningKey::parse(text).map(SigningSecret::Ed25519)
        } else {
            EndpointSecret::parse(text).map(SigningSecret::Hmac)
        }
    }

    /// A new random key of the given scheme.
    pub fn generate(scheme: SignatureScheme) -> Self {
        match scheme {
            SignatureScheme::HmacSha256 => SigningSecret::Hmac(EndpointSecret::generate()),
            SignatureScheme::Ed25519 => SigningSecret::Ed25519(Ed25519SigningKey::generate()),
        }
    }

    /// The scheme this key signs with.
    pub fn scheme(&self) -> SignatureScheme {
        match self {
            SigningSecret::Hmac(_) => SignatureScheme::HmacSha256,
            SigningSecret::Ed25519(_) => SignatureScheme::Ed25519,
        }
    }

    /// The key text (`whsec_…` or `whsk_…`), to store or to show once to the endpoint's owner.
    pub fn expose(&self) -> &str {
        match self {
            SigningSecret::Hmac(secret) => secret.expose(),
            SigningSecret::Ed25519(key) => key.expose(),
        }
    }

    /// What a receiver verifies with: the public key of an ed25519 key; `None` for HMAC, whose receiver needs
    /// the secret itself.
    pub fn public_key(&self) -> Option<Ed25519PublicKey> {
        match self {
            SigningSecret::Hmac(_) => None,
            SigningSecret::Ed25519(key) => Some(key.public_key()),
        }
    }
}

impl fmt::Display for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigningSecret::Hmac(secret) => fmt::Display::fmt(secret, f),
            SigningSecret::Ed25519(key) => fmt::Display::fmt(key, f),
        }
    }
}

/// The `webhook-signature` header value signed by every key, one entry each in the order given, separated
/// by spaces: `v1,<base64>` for an HMAC secret, `v1a,<base64>` for an ed25519 key.
///
/// Several keys let an endpoint rotate its key (the receiver accepts the old or the new one while it
/// switches) or move between schemes. An empty `keys` is an error rather than an empty header, which no
/// receiver would accept.
///
/// ```
/// use webhooks_dispatch::signing::{
///     sign_all, verify_at, verify_ed25519_at, Ed25519SigningKey, EndpointSecret, SigningSecret,
/// };
///
/// let hmac = EndpointSecret::generate();
/// let ed25519 = Ed25519SigningKey::generate();
/// let keys = [SigningSecret::Hmac(hmac.clone()), SigningSecret::Ed25519(ed25519.clone())];
/// let signature = sign_all(&keys, "msg_1", 1_700_000_000, b"{}").unwrap();
/// assert!(signature.starts_with("v1,") && signature.contains(" v1a,"));
///
/// let header = |name: &str| match name {
///     "webhook-id" => Some("msg_1"),
///     "webhook-timestamp" => Some("1700000000"),
///     "webhook-signature" => Some(signature.as_str()),
///     _ => None,
/// };
/// verify_at(&hmac, header, b"{}", 1_700_000_000, 300).unwrap();
/// verify_ed25519_at(&ed25519.public_key(), header, b"{}", 1_700_000_000, 300).unwrap();
/// ```
pub fn sign_all(
    keys: &[SigningSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, InvalidSecret> {
    if keys.is_empty() {
        return Err(InvalidSecret);
    }
    let content = SignedContent::new(msg_id, timestamp, body);
    // Joining copies the body, so it is done once for all ed25519 keys, and not at all for HMAC-only lists.
    let mut joined = None;
    let mut header = String::new();
    for key in keys {
        let entry = match key {
            SigningSecret::Hmac(secret) => hmac_signature(secret, &content)?,
            SigningSecret::Ed25519(key) => key.signature(joined.get_or_insert_with(|| content.joined())),
        };
        if !header.is_empty() {
            header.push(' ');
        }
        header.push_str(&entry);
    }
    Ok(header)
}

/// Why [`verify`] or [`verify_ed25519`] rejected a webhook. Deliberately coarse: a receiver should answer 400
/// and not help an attacker tell which part was wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A required header is absent or not valid text.
    #[error("missing or malformed webhook headers")]
    MissingHeader,
    /// The timestamp is not an integer or is outside the tolerance window.
    #[error("webhook timestamp outside tolerance")]
    Timestamp,
    /// No signature matched.
    #[error("no matching webhook signature")]
    Signature,
    /// The verifying secret itself is malformed.
    #[error("secret is not a valid whsec_ key")]
    Secret,
}

/// Verifies a received webhook against the current system time, with the default 5-minute tolerance.
///
/// `header` looks up a header by lower-case name (`webhook-id`, `webhook-timestamp`, `webhook-signature`), so
/// it works with any HTTP library's header map.
pub fn verify<'h>(
    secret: &EndpointSecret,
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
) -> Result<(), VerifyError> {
    let now = chrono::Utc::now().timestamp();
    verify_at(secret, header, body, now, DEFAULT_TOLERANCE_SECS)
}

/// [`verify`] with an explicit clock (`now`, Unix seconds) and tolerance in seconds: the timestamp is accepted
/// when it is at most `tolerance_secs` from `now` either way (any `i64` is handled; a negative tolerance
/// accepts none).
pub fn verify_at<'h>(
    secret: &EndpointSecret,
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let received = Received::read(header, now, tolerance_secs)?;
    let key = secret.key().map_err(|_| VerifyError::Secret)?;
    let expected = mac(&key, &received.content(body));
    for tag in received.candidates(SignatureScheme::HmacSha256) {
        // `verify_slice` compares in constant time, so timing does not leak how many bytes matched.
        if expected.clone().verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::Signature)
}

/// [`verify`] for `v1a` signatures: accepts the webhook if any `v1a` entry of its `webhook-signature` header
/// is a valid ed25519 signature under `public_key`, at the current system time with the default 5-minute
/// tolerance. `v1` entries are ignored: checking them needs the shared secret, which is what an ed25519
/// receiver does without.
pub fn verify_ed25519<'h>(
    public_key: &Ed25519PublicKey,
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
) -> Result<(), VerifyError> {
    let now = chrono::Utc::now().timestamp();
    verify_ed25519_at(public_key, header, body, now, DEFAULT_TOLERANCE_SECS)
}

/// [`verify_ed25519`] with an explicit clock and tolerance, under the same rules as [`verify_at`].
pub fn verify_ed25519_at<'h>(
    public_key: &Ed25519PublicKey,
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let received = Received::read(header, now, tolerance_secs)?;
    let content = received.content(body).joined();
    if received
        .candidates(SignatureScheme::Ed25519)
        .any(|signature| public_key.verifies(&content, &signature))
    {
        Ok(())
    } else {
        Err(VerifyError::Signature)
    }
}

/// A received webhook's headers, read by the rules every scheme shares; its timestamp is within tolerance.
struct Received<'h> {
    msg_id: &'h str,
    timestamp: i64,
    signatures: &'h str,
}

impl<'h> Received<'h> {
    fn read(
        header: impl Fn(&str) -> Option<&'h str>,
        now: i64,
        tolerance_secs: i64,
    ) -> Result<Self, VerifyError> {
        let msg_id = header("webhook-id").ok_or(VerifyError::MissingHeader)?;
        let timestamp = header("webhook-timestamp").ok_or(VerifyError::MissingHeader)?;
        let signatures = header("webhook-signature").ok_or(VerifyError::MissingHeader)?;
        let timestamp: i64 = timestamp.trim().parse().map_err(|_| VerifyError::Timestamp)?;
        // `abs_diff` cannot overflow: a subtraction could, for a timestamp an attacker put near `i64::MIN`,
        // and wrap into a distance that passes. A negative tolerance admits nothing.
        let within =
            u64::try_from(tolerance_secs).is_ok_and(|tolerance| now.abs_diff(timestamp) <= tolerance);
        if !within {
            return Err(VerifyError::Timestamp);
        }
        Ok(Received {
            msg_id,
            timestamp,
            signatures,
        })
    }

    fn content<'b>(&self, body: &'b [u8]) -> SignedContent<'b>
    where
        'h: 'b,
    {
        SignedContent::new(self.msg_id, self.timestamp, body)
    }

    /// The decoded signatures of `scheme`'s version. Entries of other versions, and ones that are not base64,
    /// are skipped rather than refused: a receiver must accept if any one entry matches.
    fn candidates(&self, scheme: SignatureScheme) -> impl Iterator<Item = Vec<u8>> + 'h {
        let version = scheme.version();
        self.signatures.split(' ').filter_map(move |entry| {
            let (tag, encoded) = entry.split_once(',')?;
            if tag != version {
                return None;
            }
            BASE64.decode(encoded).ok()
        })
    }
}
