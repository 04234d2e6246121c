//! Ed25519 keys for Standard Webhooks `v1a` signatures: the sender keeps a `whsk_` signing key and hands the
//! receiver only the `whpk_` public key, so a receiver's leaked configuration cannot forge deliveries.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{
    Signature, Signer as _, SigningKey, VerifyingKey, KEYPAIR_LENGTH, PUBLIC_KEY_LENGTH, SECRET_KEY_LENGTH,
};

use super::{InvalidSecret, SignatureScheme};

/// Prefix of every ed25519 signing key.
pub const SIGNING_KEY_PREFIX: &str = "whsk_";
/// Prefix of every ed25519 public key.
pub const PUBLIC_KEY_PREFIX: &str = "whpk_";

/// An ed25519 signing key, `whsk_` followed by the standard base64 of its 32-byte seed.
///
/// `Debug` and `Display` print `whsk_[redacted]`, as [`EndpointSecret`](super::EndpointSecret)'s do: the key
/// must never reach logs, errors or attempt records. Receivers get [`Ed25519SigningKey::public_key`] instead.
///
/// ```
/// use webhooks_dispatch::signing::{Ed25519PublicKey, Ed25519SigningKey};
///
/// let key = Ed25519SigningKey::generate();
/// assert!(key.expose().starts_with("whsk_"));
/// assert_eq!(format!("{key}"), "whsk_[redacted]");
/// // What the endpoint's owner configures on the receiving side:
/// let public = Ed25519PublicKey::parse(key.public_key().as_str()).unwrap();
/// assert_eq!(public, key.public_key());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Ed25519SigningKey {
    /// Always the canonical seed form, whatever form was parsed, so equal keys have equal text.
    text: String,
    /// Boxed so that moving the key moves a pointer, not the 224 bytes that hold the seed (and would leave
    /// copies of it behind, unwiped); it also keeps [`SigningSecret`](super::SigningSecret) small.
    key: Box<SigningKey>,
}

impl Ed25519SigningKey {
    /// Generates a key from a 32-byte seed from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut seed = [0u8; SECRET_KEY_LENGTH];
        // As for EndpointSecret: without the OS CSPRNG there is no safe way to make a key.
        getrandom::fill(&mut seed).expect("operating system random number generator failed");
        Self::from_key(SigningKey::from_bytes(&seed))
    }

    /// Reads a `whsk_` key: the base64 of the 32-byte seed, or of a 64-byte seed-then-public-key pair (the
    /// form libsodium and Go's `crypto/ed25519` store), whose public half must be the seed's.
    pub fn parse(text: &str) -> Result<Self, InvalidSecret> {
        let encoded = text.strip_prefix(SIGNING_KEY_PREFIX).ok_or(InvalidSecret)?;
        let bytes = BASE64.decode(encoded).map_err(|_| InvalidSecret)?;
        let key = if let Ok(seed) = <[u8; SECRET_KEY_LENGTH]>::try_from(bytes.as_slice()) {
            SigningKey::from_bytes(&seed)
        } else if let Ok(pair) = <[u8; KEYPAIR_LENGTH]>::try_from(bytes.as_slice()) {
            // A pair whose halves disagree is corrupt; signing with its seed would yield signatures that fail
            // under the public key its owner believes in.
            SigningKey::from_keypair_bytes(&pair).map_err(|_| InvalidSecret)?
        } else {
            return Err(InvalidSecret);
        };
        Ok(Self::from_key(key))
    }

    /// The key text (`whsk_` and the seed's base64, also for a key parsed from the 64-byte form), to store.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The public key that verifies this key's signatures, to give to the endpoint's owner.
    pub fn public_key(&self) -> Ed25519PublicKey {
        Ed25519PublicKey::from_key(self.key.verifying_key())
    }

    fn from_key(key: SigningKey) -> Self {
        let text = format!("{SIGNING_KEY_PREFIX}{}", BASE64.encode(key.as_bytes()));
        Ed25519SigningKey {
            text,
            key: Box::new(key),
        }
    }

    /// One `v1a,<base64>` header entry over the whole signed content (ed25519 cannot take it in pieces).
    pub(super) fn signature(&self, content: &[u8]) -> String {
        let signature = self.key.sign(content);
        format!(
            "{},{}",
            SignatureScheme::Ed25519.version(),
            BASE64.encode(signature.to_bytes())
        )
    }
}

impl fmt::Debug for Ed25519SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ed25519SigningKey(whsk_[redacted])")
    }
}

impl fmt::Display for Ed25519SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("whsk_[redacted]")
    }
}

/// An ed25519 public key, `whpk_` followed by the standard base64 of its 32 bytes. It is not a secret, so
/// `Debug` and `Display` print it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Ed25519PublicKey {
    text: String,
    key: VerifyingKey,
}

impl Ed25519PublicKey {
    /// Reads a `whpk_` key. A small-order ("weak") point is refused: no signing key has it, and it would only
    /// ever be configured by mistake or by someone hoping for a lax verifier.
    pub fn parse(text: &str) -> Result<Self, InvalidSecret> {
        let encoded = text.strip_prefix(PUBLIC_KEY_PREFIX).ok_or(InvalidSecret)?;
        let bytes = BASE64.decode(encoded).map_err(|_| InvalidSecret)?;
        let bytes = <[u8; PUBLIC_KEY_LENGTH]>::try_from(bytes.as_slice()).map_err(|_| InvalidSecret)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| InvalidSecret)?;
        if key.is_weak() {
            return Err(InvalidSecret);
        }
        Ok(Self::from_key(key))
    }

    /// The key text, `whpk_…`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn from_key(key: VerifyingKey) -> Self {
        let text = format!("{PUBLIC_KEY_PREFIX}{}", BASE64.encode(key.as_bytes()));
        Ed25519PublicKey { text, key }
    }

    /// Whether a base64 `v1a` entry is a valid signature of `content`. Strict verification rejects the
    /// malleable encodings plain ed25519 admits, so one message has exactly one accepted signature per key.
    pub(super) fn verifies(&self, content: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = <&[u8; Signature::BYTE_SIZE]>::try_from(signature) else {
            return false;
        };
        self.key
            .verify_strict(content, &Signature::from_bytes(signature))
            .is_ok()
    }
}

impl fmt::Debug for Ed25519PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ed25519PublicKey({})", self.text)
    }
}

impl fmt::Display for Ed25519PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
