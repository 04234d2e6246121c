//! Standard Webhooks v1 signatures: signing for senders and [`verify`] for receivers.
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{body}`; the key is the base64-decoded part of the
//! secret after `whsec_`; the header value is `v1,` + base64(HMAC-SHA256). Receivers may get several
//! space-separated signatures (during secret rotation) and must accept the message if any one matches.

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

/// The secret is not `whsec_` followed by non-empty base64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("secret is not a valid whsec_ key")]
pub struct InvalidSecret;

fn decode_key(secret: &str) -> Result<Vec<u8>, InvalidSecret> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    match BASE64.decode(encoded) {
        Ok(key) if !key.is_empty() => Ok(key),
        _ => Err(InvalidSecret),
    }
}

fn mac(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("hmac accepts any key length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` header value (`v1,<base64>`) for one delivery attempt.
pub fn sign(
    secret: &EndpointSecret,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, InvalidSecret> {
    let key = secret.key()?;
    let tag = mac(&key, msg_id, timestamp, body).finalize().into_bytes();
    Ok(format!("v1,{}", BASE64.encode(tag)))
}

/// Why [`verify`] rejected a webhook. Deliberately coarse: a receiver should answer 400 and not help an
/// attacker tell which part was wrong.
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
    let msg_id = header("webhook-id").ok_or(VerifyError::MissingHeader)?;
    let timestamp = header("webhook-timestamp").ok_or(VerifyError::MissingHeader)?;
    let signatures = header("webhook-signature").ok_or(VerifyError::MissingHeader)?;
    let timestamp: i64 = timestamp.trim().parse().map_err(|_| VerifyError::Timestamp)?;
    // `abs_diff` cannot overflow: a subtraction could, for a timestamp an attacker put near `i64::MIN`, and
    // wrap into a distance that passes. A negative tolerance admits nothing.
    let within = u64::try_from(tolerance_secs).is_ok_and(|tolerance| now.abs_diff(timestamp) <= tolerance);
    if !within {
        return Err(VerifyError::Timestamp);
    }
    let key = secret.key().map_err(|_| VerifyError::Secret)?;
    let expected = mac(&key, msg_id, timestamp, body);
    for candidate in signatures.split(' ') {
        let Some(encoded) = candidate.strip_prefix("v1,") else {
            continue;
        };
        let Ok(tag) = BASE64.decode(encoded) else {
            continue;
        };
        // `verify_slice` compares in constant time, so timing does not leak how many bytes matched.
        if expected.clone().verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::Signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> impl Fn(&str) -> Option<&'a str> {
        move |name| match name {
            "webhook-id" => Some(id),
            "webhook-timestamp" => Some(ts),
            "webhook-signature" => Some(sig),
            _ => None,
        }
    }

    #[test]
    fn invariant3_signature_matches_standard_webhooks_known_answer() {
        let secret = EndpointSecret::parse(SPEC_SECRET).unwrap();
        assert_eq!(sign(&secret, SPEC_ID, SPEC_TS, SPEC_BODY).unwrap(), SPEC_SIG);
        let ts = SPEC_TS.to_string();
        verify_at(&secret, headers(SPEC_ID, &ts, SPEC_SIG), SPEC_BODY, SPEC_TS, 300).unwrap();
    }

    #[test]
    fn invariant3_verify_accepts_any_of_several_signatures() {
        let secret = EndpointSecret::parse(SPEC_SECRET).unwrap();
        let ts = SPEC_TS.to_string();
        let sigs = format!("v1,AAAA v2,whatever {SPEC_SIG}");
        verify_at(&secret, headers(SPEC_ID, &ts, &sigs), SPEC_BODY, SPEC_TS, 300).unwrap();
    }

    #[test]
    fn invariant3_verify_enforces_tolerance_both_ways() {
        let secret = EndpointSecret::parse(SPEC_SECRET).unwrap();
        let ts = SPEC_TS.to_string();
        let h = headers(SPEC_ID, &ts, SPEC_SIG);
        assert!(verify_at(&secret, &h, SPEC_BODY, SPEC_TS + 300, 300).is_ok());
        assert!(verify_at(&secret, &h, SPEC_BODY, SPEC_TS - 300, 300).is_ok());
        assert_eq!(
            verify_at(&secret, &h, SPEC_BODY, SPEC_TS + 301, 300),
            Err(VerifyError::Timestamp)
        );
        assert_eq!(
            verify_at(&secret, &h, SPEC_BODY, SPEC_TS - 301, 300),
            Err(VerifyError::Timestamp)
        );
    }

    #[test]
    fn invariant3_verify_rejects_missing_headers_and_bad_secret() {
        let secret = EndpointSecret::parse(SPEC_SECRET).unwrap();
        let none = |_: &str| -> Option<&str> { None };
        assert_eq!(
            verify_at(&secret, none, SPEC_BODY, 0, 300),
            Err(VerifyError::MissingHeader)
        );
        assert!(EndpointSecret::parse("whsec_").is_err());
        assert!(EndpointSecret::parse("whsec_!!!").is_err());
    }

    #[test]
    fn invariant7_secret_debug_and_display_redact() {
        let secret = EndpointSecret::generate();
        let raw = secret.expose().to_owned();
        assert!(raw.starts_with("whsec_"));
        assert!(BASE64.decode(&raw[6..]).unwrap().len() >= 24);
        assert!(!format!("{secret:?}").contains(&raw[6..]));
        assert!(!format!("{secret}").contains(&raw[6..]));
        assert_ne!(EndpointSecret::generate(), secret, "secrets come from a CSPRNG");
    }

    /// `now - timestamp` overflowed for a timestamp far from now: a panic in debug builds, and in release a
    /// wrapped distance that passed the tolerance (`i64::MIN + now` came out as `i64::MIN`).
    #[test]
    fn invariant3_timestamps_whose_distance_overflows_are_refused() {
        let secret = EndpointSecret::parse(SPEC_SECRET).unwrap();
        for (now, timestamp) in [
            (SPEC_TS, i64::MIN + SPEC_TS),
            (SPEC_TS, i64::MIN),
            (SPEC_TS, i64::MIN + 1),
            (-SPEC_TS, i64::MAX),
            (i64::MAX, -1),
            (i64::MIN, 1),
            (i64::MIN, i64::MAX),
        ] {
            let ts = timestamp.to_string();
            let signature = sign(&secret, SPEC_ID, timestamp, SPEC_BODY).unwrap();
            assert_eq!(
                verify_at(&secret, headers(SPEC_ID, &ts, &signature), SPEC_BODY, now, 300),
                Err(VerifyError::Timestamp),
                "now {now}, timestamp {timestamp}"
            );
        }
    }

    proptest! {
        #[test]
        fn invariant3_any_tampered_byte_fails(
            body in proptest::collection::vec(any::<u8>(), 1..512),
            flip_at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            id_tamper in any::<bool>(),
        ) {
            let secret = EndpointSecret::generate();
            let sig = sign(&secret, "msg_x", 1_700_000_000, &body).unwrap();
            let ts = "1700000000";
            prop_assert!(verify_at(&secret, headers("msg_x", ts, &sig), &body, 1_700_000_000, 300).is_ok());
            let mut tampered = body.clone();
            let i = flip_at.index(tampered.len());
            tampered[i] ^= flip;
            prop_assert_eq!(
                verify_at(&secret, headers("msg_x", ts, &sig), &tampered, 1_700_000_000, 300),
                Err(VerifyError::Signature)
            );
            let id = if id_tamper { "msg_y" } else { "msg_x" };
            let ts2 = if id_tamper { ts } else { "1700000001" };
            prop_assert_eq!(
                verify_at(&secret, headers(id, ts2, &sig), &body, 1_700_000_000, 300),
                Err(VerifyError::Signature)
            );
        }

        /// Any timestamp against any clock and tolerance: never a panic, and a correctly signed message is
        /// accepted exactly when its timestamp is within the tolerance of now (a negative tolerance admits
        /// nothing).
        #[test]
        fn invariant3_any_timestamp_is_accepted_iff_within_tolerance(
            now in any::<i64>(),
            offset in prop_oneof![any::<i64>(), -1000i64..1000],
            far in any::<bool>(),
            tolerance in prop_oneof![any::<i64>(), 0i64..1000],
        ) {
            let secret = EndpointSecret::parse(SPEC_SECRET).unwrap();
            let timestamp = if far { offset } else { now.wrapping_add(offset) };
            let ts = timestamp.to_string();
            let signature = sign(&secret, SPEC_ID, timestamp, SPEC_BODY).unwrap();
            let verdict = verify_at(&secret, headers(SPEC_ID, &ts, &signature), SPEC_BODY, now, tolerance);
            let within = u64::try_from(tolerance).is_ok_and(|t| now.abs_diff(timestamp) <= t);
            prop_assert_eq!(verdict.is_ok(), within, "now {} timestamp {} tolerance {}", now, timestamp, tolerance);
            if !within {
                prop_assert_eq!(verdict, Err(VerifyError::Timestamp));
            }
        }
    }
}
