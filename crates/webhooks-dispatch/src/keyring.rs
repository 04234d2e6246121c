//! Endpoint secrets encrypted at rest under a ring of master keys.
//!
//! An endpoint's `whsec_` secret (or `whsk_` signing key) lets whoever holds it sign webhooks that the
//! endpoint's owner will trust. Stored as plaintext, every database dump, backup, replica or read-only SQL
//! session would hand out that power for every customer at once. So the database holds only *sealed* text,
//! and the key that opens it, the master key, lives outside the database (a key file or the environment).
//!
//! - **AEAD** (XChaCha20-Poly1305): a sealed secret is both unreadable and unforgeable without the master
//!   key; any change to the stored text fails to open rather than yielding a different secret. Its 24-byte
//!   nonce is drawn at random for every seal, which is safe at any volume without coordinating counters
//!   between the many processes that may write rows (a 12-byte nonce would not be, by the birthday bound).
//! - **Associated data binds the row**: the caller passes a `context` naming the storage row (e.g. the
//!   endpoint id), authenticated along with the format version and the key id. Someone who can write to the
//!   database but lacks the master key still cannot copy another customer's sealed secret into a row of their
//!   own and have the service sign with it: the copy does not open there.
//! - **Key ids make rotation possible without downtime**: every sealed value names the master key it was
//!   sealed under, so a [`KeyRing`] holding several keys opens rows written under any of them, while new
//!   seals always use the ring's *current* key. Rolling a new key out across many processes:
//!   1. add the new key *second* in every process's ring (decrypt-only), so everyone can open what it seals;
//!   2. once all run with it, move it *first* everywhere, so new seals use it;
//!   3. rekey: open and reseal every row for which [`SecretCipher::is_current`] is false;
//!   4. drop the old key from the rings.
//!
//!   Skipping step 1 would let a process with the new ring seal rows that processes still on the old ring
//!   cannot open.
//!
//! Sealed text is `wdenc1.<key id>.<base64url-no-pad(nonce || ciphertext || tag)>`: printable ASCII, fit
//! for a `TEXT` column. Rows written by older releases hold plaintext secrets, which [`is_sealed`] tells
//! apart, so they can be read as they are and sealed on the way.
//!
//! This guards the stored rows, not a running process: whoever has the master key and the database has the
//! secrets. Key bytes and opened secrets are held in [`Zeroizing`] so they do not linger in freed memory, and
//! no error or `Debug` output carries key bytes, plaintext or ciphertext.

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// Starts every sealed value; the digit is the format version, so a future format can sit beside this one.
const PREFIX: &str = "wdenc1.";
const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
const MAX_KEY_ID_CHARS: usize = 32;

/// Key files are often written by hand or by `openssl rand -base64 32`; accepting them with or without the
/// trailing `=` spares operators a startup failure over padding.
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

const BAD_KEY_ID: &str = "key id must be 1 to 32 characters of A-Z, a-z, 0-9, '_' and '-'";

/// Seals and opens secret text stored in the database (endpoint HMAC secrets `whsec_…`, ed25519 signing keys
/// `whsk_…`).
pub trait SecretCipher: Send + Sync + 'static {
    /// Seals `secret` for the storage row identified by `context` (bound as AEAD associated data, so a
    /// ciphertext copied into another row does not open) under the current master key. Returns printable
    /// ASCII text.
    fn seal(&self, context: &str, secret: &str) -> Result<String, CipherError>;
    /// Opens text produced by `seal` under any key of the ring, for the same `context`.
    fn open(&self, context: &str, sealed: &str) -> Result<Zeroizing<String>, CipherError>;
    /// Whether `sealed` is sealed under the current master key (a rekey leaves such rows alone). False for
    /// plaintext and for other keys.
    fn is_current(&self, sealed: &str) -> bool;
}

/// Whether stored text is sealed (starts with the sealed-format prefix) rather than a plaintext secret
/// written by an older release.
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// Why a secret could not be sealed or opened, or a master key not loaded.
///
/// No variant carries key bytes, plaintext or ciphertext; key ids are not secret and may appear. Match on
/// [`CipherError::code`] for a stable identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CipherError {
    /// The value was sealed under a key id that is not in the ring (dropped too early, or a ring not yet
    /// updated during a rotation).
    #[error("sealed under master key `{key_id}`, which is not in the key ring")]
    UnknownKey {
        /// The key id named by the sealed value (validated, at most 32 safe characters).
        key_id: String,
    },
    /// Authentication failed: the text was altered, sealed under other bytes with the same key id, or sealed
    /// for another row. One coarse error, so failures reveal nothing about which.
    #[error("sealed secret failed to open (altered, other key or other row)")]
    Open,
    /// The stored text is not in the sealed format.
    #[error("not a sealed secret: {reason}")]
    Malformed {
        /// What is wrong with the format, never echoing the text.
        reason: &'static str,
    },
    /// A master key spec (`id:base64`) is unusable.
    #[error("invalid master key: {reason}")]
    InvalidKey {
        /// What is wrong, never echoing key material.
        reason: &'static str,
    },
    /// Two keys of one ring share an id, so sealed values could not say which key opens them.
    #[error("master key id `{key_id}` appears more than once in the key ring")]
    DuplicateKeyId {
        /// The repeated id.
        key_id: String,
    },
    /// The key ring text has no key entry at all.
    #[error("key ring has no master key")]
    EmptyRing,
    /// The operating system's random number generator failed, so no key or nonce could be drawn.
    #[error("operating system random number generator failed")]
    Random,
    /// The cipher refused the secret (only for text far beyond any secret's size).
    #[error("secret could not be sealed")]
    Seal,
}

impl CipherError {
    const fn malformed(reason: &'static str) -> CipherError {
        CipherError::Malformed { reason }
    }

    const fn invalid_key(reason: &'static str) -> CipherError {
        CipherError::InvalidKey { reason }
    }

    /// A stable, machine-readable identifier for the variant.
    pub fn code(&self) -> &'static str {
        match self {
            CipherError::UnknownKey { .. } => "unknown_key",
            CipherError::Open => "open_failed",
            CipherError::Malformed { .. } => "malformed_sealed_secret",
            CipherError::InvalidKey { .. } => "invalid_master_key",
            CipherError::DuplicateKeyId { .. } => "duplicate_key_id",
            CipherError::EmptyRing => "empty_key_ring",
            CipherError::Random => "random_failed",
            CipherError::Seal => "seal_failed",
        }
    }
}

/// One master key: an id, named in every value it seals, and 32 secret bytes.
///
/// `Debug` prints the id only.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    bytes: Zeroizing<[u8; KEY_BYTES]>,
}

impl MasterKey {
    /// Draws a new key from the operating system's CSPRNG. `id`: 1–32 characters of `[A-Za-z0-9_-]`.
    pub fn generate(id: &str) -> Result<MasterKey, CipherError> {
        check_key_id(id)?;
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
        getrandom::fill(bytes.as_mut_slice()).map_err(|_| CipherError::Random)?;
        let id = id.to_owned();
        Ok(MasterKey { id, bytes })
    }

    /// Reads `id:<standard base64 of 32 bytes>` (padding optional, surrounding whitespace ignored), the form
    /// [`MasterKey::encoded`] writes.
    pub fn parse(spec: &str) -> Result<MasterKey, CipherError> {
        let spec = spec.trim().split_once(':');
        let (id, encoded) = spec.ok_or(CipherError::invalid_key("expected `id:base64`"))?;
        check_key_id(id)?;
        // The decoded bytes are key material even when their length is wrong.
        let decoded = KEY_BASE64.decode(encoded).map(Zeroizing::new);
        let decoded = decoded.map_err(|_| CipherError::invalid_key("key is not valid standard base64"))?;
        if decoded.len() != KEY_BYTES {
            return Err(CipherError::invalid_key("key must decode to exactly 32 bytes"));
        }
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
        bytes.copy_from_slice(&decoded);
        let id = id.to_owned();
        Ok(MasterKey { id, bytes })
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The `id:base64` text that [`MasterKey::parse`] reads, for writing a key file. It is the key itself:
    /// write it where only the service can read it, and nowhere else.
    pub fn encoded(&self) -> Zeroizing<String> {
        // Room for it all up front: growing the string mid-write would free a buffer holding part of the key.
        let mut text = Zeroizing::new(String::with_capacity(
            self.id.len() + 1 + KEY_BYTES.div_ceil(3) * 4,
        ));
        text.push_str(&self.id);
        text.push(':');
        KEY_BASE64.encode_string(self.bytes.as_slice(), &mut text);
        text
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(self.bytes.as_slice()))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn is_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_CHARS).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_key_id(id: &str) -> Result<(), CipherError> {
    if is_key_id(id) {
        Ok(())
    } else {
        Err(CipherError::invalid_key(BAD_KEY_ID))
    }
}

/// The master keys a process can open secrets with; the first, the *current* key, seals new ones.
///
/// `Debug` shows the ids and the current id only.
#[derive(Clone)]
pub struct KeyRing {
    /// Never empty, ids unique; `keys[0]` is current.
    keys: Vec<MasterKey>,
}

impl KeyRing {
    /// A ring with one key, which seals and opens.
    pub fn new(current: MasterKey) -> KeyRing {
        KeyRing { keys: vec![current] }
    }

    /// Adds a decrypt-only key (one being rotated in or out). A second key with an id already in the ring is
    /// refused: sealed values name their key by id.
    pub fn with_key(mut self, key: MasterKey) -> Result<KeyRing, CipherError> {
        if self.key(&key.id).is_some() {
            return Err(CipherError::DuplicateKeyId {
                key_id: key.id.clone(),
            });
        }
        self.keys.push(key);
        Ok(self)
    }

    /// Reads a ring: `id:base64` entries separated by commas and/or newlines; blank lines and lines starting
    /// with `#` are ignored, whitespace around entries is trimmed. **The first entry is the current key**;
    /// the others only open. One text thus fits a key file or an environment variable.
    pub fn parse(text: &str) -> Result<KeyRing, CipherError> {
        let mut entries = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.starts_with('#'))
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty());
        let current = entries.next().ok_or(CipherError::EmptyRing)?;
        entries.try_fold(KeyRing::new(MasterKey::parse(current)?), |ring, entry| {
            ring.with_key(MasterKey::parse(entry)?)
        })
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Every key's id, the current one first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|key| key.id.as_str()).collect()
    }

    fn key(&self, id: &str) -> Option<&MasterKey> {
        self.keys.iter().find(|key| key.id == id)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &self.current_id())
            .field("keys", &self.key_ids())
            .finish()
    }
}

/// What is authenticated beside the secret: the format version and key id, so neither can be relabelled, and
/// the row. A key id never contains `.`, so the context cannot shift into it.
fn associated_data(key_id: &str, context: &str) -> String {
    format!("{PREFIX}{key_id}.{context}")
}

/// A sealed value split into its key id and nonce || ciphertext || tag, checked for shape only.
fn split_sealed(sealed: &str) -> Result<(&str, Vec<u8>), CipherError> {
    let malformed = CipherError::malformed;
    let rest = sealed
        .strip_prefix(PREFIX)
        .ok_or(malformed("missing the wdenc1 prefix"))?;
    let (key_id, body) = rest
        .split_once('.')
        .ok_or(malformed("missing the key id separator"))?;
    if !is_key_id(key_id) {
        return Err(malformed("invalid key id"));
    }
    // Strict decoding (no padding, no stray trailing bits) gives each byte string one text, so any change to
    // the text either fails here or changes the bytes, which then fail to authenticate.
    let raw = URL_SAFE_NO_PAD.decode(body);
    let raw = raw.map_err(|_| malformed("body is not base64url without padding"))?;
    if raw.len() < NONCE_BYTES + TAG_BYTES {
        return Err(malformed("body too short"));
    }
    Ok((key_id, raw))
}

impl SecretCipher for KeyRing {
    fn seal(&self, context: &str, secret: &str) -> Result<String, CipherError> {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|_| CipherError::Random)?;
        let aad = associated_data(&key.id, context);
        let (msg, aad) = (secret.as_bytes(), aad.as_bytes());
        let sealed = key
            .cipher()
            .encrypt(XNonce::from_slice(&nonce), Payload { msg, aad });
        let mut raw = nonce.to_vec();
        raw.extend(sealed.map_err(|_| CipherError::Seal)?);
        Ok(format!("{PREFIX}{}.{}", key.id, URL_SAFE_NO_PAD.encode(raw)))
    }

    fn open(&self, context: &str, sealed: &str) -> Result<Zeroizing<String>, CipherError> {
        let (key_id, raw) = split_sealed(sealed)?;
        let unknown = || CipherError::UnknownKey {
            key_id: key_id.to_owned(),
        };
        let key = self.key(key_id).ok_or_else(unknown)?;
        let (nonce, msg) = raw.split_at(NONCE_BYTES);
        let aad = associated_data(key_id, context);
        let aad = aad.as_bytes();
        let plain = key
            .cipher()
            .decrypt(XNonce::from_slice(nonce), Payload { msg, aad });
        let plain = Zeroizing::new(plain.map_err(|_| CipherError::Open)?);
        // Only `seal` writes under these keys and it takes text, so this fails only if a key was shared with
        // another writer.
        let text = std::str::from_utf8(&plain);
        let text = text.map_err(|_| CipherError::malformed("opened secret is not UTF-8 text"))?;
        Ok(Zeroizing::new(text.to_owned()))
    }

    fn is_current(&self, sealed: &str) -> bool {
        matches!(split_sealed(sealed), Ok((key_id, _)) if key_id == self.current_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ROW: &str = "ep_01J0000000000000000000000";

    fn key(id: &str, fill: u8) -> MasterKey {
        MasterKey::parse(&format!("{id}:{}", STANDARD.encode([fill; KEY_BYTES]))).unwrap()
    }

    fn body(sealed: &str) -> &str {
        sealed.rsplit('.').next().unwrap()
    }

    #[test]
    fn sealed_secret_opens_under_the_current_key_and_is_printable() {
        // Behind the trait object the rest of the code base holds.
        let ring: Box<dyn SecretCipher> = Box::new(KeyRing::new(MasterKey::generate("k1").unwrap()));
        let sealed = ring.seal(ROW, SECRET).unwrap();
        assert!(sealed.starts_with("wdenc1.k1."), "{sealed}");
        assert!(sealed.bytes().all(|b| b.is_ascii_graphic()));
        assert!(is_sealed(&sealed) && !is_sealed(SECRET));
        assert_eq!(ring.open(ROW, &sealed).unwrap().as_str(), SECRET);
        assert_eq!(ring.open(ROW, &ring.seal(ROW, "").unwrap()).unwrap().as_str(), "");
    }

    #[test]
    fn decrypt_only_old_key_still_opens_rows_sealed_before_rotation() {
        let old = KeyRing::new(key("old", 1));
        let before = old.seal(ROW, SECRET).unwrap();
        let rotated = KeyRing::new(key("new", 2)).with_key(key("old", 1)).unwrap();
        assert_eq!(rotated.open(ROW, &before).unwrap().as_str(), SECRET);
        let after = rotated.seal(ROW, SECRET).unwrap();
        assert!(after.starts_with("wdenc1.new."));
        // Step 1 of the rolling procedure: a ring with the new key second opens what the new current seals.
        let rolling_out = KeyRing::new(key("old", 1)).with_key(key("new", 2)).unwrap();
        assert_eq!(rolling_out.open(ROW, &after).unwrap().as_str(), SECRET);
    }

    #[test]
    fn is_current_only_for_values_sealed_under_the_current_key() {
        let rotated = KeyRing::new(key("new", 2)).with_key(key("old", 1)).unwrap();
        let old_row = KeyRing::new(key("old", 1)).seal(ROW, SECRET).unwrap();
        let new_row = rotated.seal(ROW, SECRET).unwrap();
        assert!(rotated.is_current(&new_row));
        assert!(!rotated.is_current(&old_row));
        assert!(!rotated.is_current(SECRET), "plaintext from an older release");
        assert!(
            !rotated.is_current("wdenc1.new."),
            "malformed: a rekey must look at it"
        );
        assert!(!rotated.is_current(&format!("wdenc1.other.{}", body(&new_row))));
    }

    #[test]
    fn sealed_value_copied_to_another_row_does_not_open() {
        let ring = KeyRing::new(key("k1", 7));
        let sealed = ring.seal(ROW, SECRET).unwrap();
        assert_eq!(ring.open("ep_other", &sealed), Err(CipherError::Open));
        assert_eq!(ring.open("", &sealed), Err(CipherError::Open));
    }

    #[test]
    fn ring_without_the_sealing_key_reports_unknown_key() {
        let sealed = KeyRing::new(key("gone", 3)).seal(ROW, SECRET).unwrap();
        let err = KeyRing::new(key("k1", 4)).open(ROW, &sealed).unwrap_err();
        assert_eq!(
            err,
            CipherError::UnknownKey {
                key_id: "gone".into()
            }
        );
        assert_eq!(err.code(), "unknown_key");
    }

    #[test]
    fn same_key_id_with_other_bytes_or_a_relabelled_key_id_fails_authentication() {
        let sealed = KeyRing::new(key("k1", 5)).seal(ROW, SECRET).unwrap();
        let other_bytes = KeyRing::new(key("k1", 6));
        assert_eq!(other_bytes.open(ROW, &sealed), Err(CipherError::Open));
        // And the key id is authenticated too: relabelled to another id, it fails even under the same bytes.
        let ring = KeyRing::new(key("a", 9)).with_key(key("b", 9)).unwrap();
        let sealed = ring.seal(ROW, SECRET).unwrap();
        let relabelled = format!("wdenc1.b.{}", body(&sealed));
        assert_eq!(ring.open(ROW, &relabelled), Err(CipherError::Open));
    }

    #[test]
    fn two_seals_of_one_secret_differ_by_their_random_nonce() {
        let ring = KeyRing::new(key("k1", 8));
        let (a, b) = (ring.seal(ROW, SECRET).unwrap(), ring.seal(ROW, SECRET).unwrap());
        assert_ne!(a, b);
        assert_ne!(body(&a)[..32], body(&b)[..32], "the nonce leads the body");
    }

    /// Rows already in databases must keep opening: the format and its associated data are fixed for
    /// `wdenc1`. (Sealed once under `key("k1", 42)` for `ROW`.)
    #[test]
    fn value_sealed_by_this_format_version_keeps_opening() {
        let sealed = "wdenc1.k1.EamHf3RTyR7VEQb3768Jlr2VvqU_SWx2Y6E7xIkizkYVBWttBv\
                      S0lAfRWNjGC1Aqnh-EPgjz1nFbvj0_DBMgoFvQobz2RJTQbLAhg4cf";
        let opened = KeyRing::new(key("k1", 42)).open(ROW, sealed).unwrap();
        assert_eq!(opened.as_str(), SECRET);
    }

    #[test]
    fn text_not_in_the_sealed_format_is_malformed() {
        let ring = KeyRing::new(key("k1", 1));
        let sealed = ring.seal(ROW, SECRET).unwrap();
        for text in [
            SECRET.to_owned(),
            "wdenc1.".to_owned(),
            "wdenc1.k1".to_owned(),
            "wdenc1.k1.".to_owned(),
            format!("wdenc1.k1.{}", &body(&sealed)[..50]),
            format!("wdenc1.k1.{}=", body(&sealed)),
            format!("wdenc1.k!.{}", body(&sealed)),
            format!("wdenc1.{}.{}", "k".repeat(33), body(&sealed)),
            format!("wdenc2.k1.{}", body(&sealed)),
        ] {
            let err = ring.open(ROW, &text).unwrap_err();
            assert!(matches!(err, CipherError::Malformed { .. }), "{text}: {err:?}");
            assert_eq!(err.code(), "malformed_sealed_secret");
        }
    }

    #[test]
    fn encoded_master_key_parses_back_to_the_same_key() {
        let generated = MasterKey::generate("prod-2025_01").unwrap();
        let sealed = KeyRing::new(generated.clone()).seal(ROW, SECRET).unwrap();
        let encoded = generated.encoded();
        assert!(encoded.starts_with("prod-2025_01:") && encoded.ends_with('='));
        let parsed = MasterKey::parse(&encoded).unwrap();
        assert_eq!(parsed.id(), "prod-2025_01");
        assert_eq!(KeyRing::new(parsed).open(ROW, &sealed).unwrap().as_str(), SECRET);
        let unpadded = KeyRing::new(MasterKey::parse(encoded.trim_end_matches('=')).unwrap());
        assert_eq!(unpadded.open(ROW, &sealed).unwrap().as_str(), SECRET);
        assert_ne!(MasterKey::generate("x").unwrap().encoded()[2..], encoded[13..]);
    }

    #[test]
    fn parse_skips_comments_blank_lines_and_commas_and_the_first_entry_is_current() {
        let [a, b, c] = [key("a", 1), key("b", 2), key("c", 3)].map(|k| k.encoded().to_string());
        let text = format!("# master keys, newest first\n\n  {b} ,{a}\n# retired soon\n\t{c},\n\n");
        let ring = KeyRing::parse(&text).unwrap();
        assert_eq!(ring.current_id(), "b");
        assert_eq!(ring.key_ids(), ["b", "a", "c"]);
        assert!(ring.seal(ROW, SECRET).unwrap().starts_with("wdenc1.b."));
        let one_line = KeyRing::parse(&format!("{c},{a}")).unwrap();
        assert_eq!(one_line.key_ids(), ["c", "a"]);
        let old_row = KeyRing::new(key("a", 1)).seal(ROW, SECRET).unwrap();
        assert_eq!(one_line.open(ROW, &old_row).unwrap().as_str(), SECRET);
    }

    #[test]
    fn parse_refuses_each_bad_ring_with_a_typed_error() {
        let good = STANDARD.encode([1u8; KEY_BYTES]);
        let invalid = CipherError::invalid_key;
        let bad_id = invalid(BAD_KEY_ID);
        let bad_len = invalid("key must decode to exactly 32 bytes");
        let duplicate = CipherError::DuplicateKeyId { key_id: "a".into() };
        let cases = [
            (String::new(), CipherError::EmptyRing),
            ("# only a comment\n\n , \n".into(), CipherError::EmptyRing),
            (format!("a:{good}\nb:{good}\na:{good}"), duplicate),
            (good.clone(), invalid("expected `id:base64`")),
            (format!(":{good}"), bad_id.clone()),
            (format!("a.b:{good}"), bad_id.clone()),
            (format!("{}:{good}", "k".repeat(33)), bad_id.clone()),
            (
                "a:!!!not-base64!!!".into(),
                invalid("key is not valid standard base64"),
            ),
            (format!("a:{}", STANDARD.encode([1u8; 31])), bad_len.clone()),
            (format!("a:{}", STANDARD.encode([1u8; 33])), bad_len.clone()),
            (format!("a:{good}\nb:"), bad_len),
        ];
        for (text, expected) in cases {
            assert_eq!(KeyRing::parse(&text).unwrap_err(), expected, "{text:?}");
        }
        assert_eq!(MasterKey::generate("bad id").unwrap_err(), bad_id);
        let dup = KeyRing::new(key("a", 1)).with_key(key("a", 2)).unwrap_err();
        assert_eq!(dup.code(), "duplicate_key_id");
    }

    #[test]
    fn invariant7_no_error_or_debug_shows_key_bytes_plaintext_or_ciphertext() {
        let master = MasterKey::generate("k1").unwrap();
        let encoded = master.encoded();
        let key_b64 = encoded.split_once(':').unwrap().1.to_owned();
        let ring = KeyRing::new(master.clone()).with_key(key("old", 1)).unwrap();
        let sealed = ring.seal(ROW, SECRET).unwrap();
        let mut tampered = sealed.clone();
        tampered.push(if tampered.ends_with('A') { 'B' } else { 'A' });
        let short = &sealed[..sealed.len() - 20];
        let errors = [
            ring.open("ep_other", &sealed).unwrap_err(),
            ring.open(ROW, short).unwrap_err(),
            ring.open(ROW, &tampered).unwrap_err(),
            ring.open(ROW, SECRET).unwrap_err(),
            KeyRing::new(key("x", 2)).open(ROW, &sealed).unwrap_err(),
            MasterKey::parse(&key_b64).unwrap_err(),
            MasterKey::parse(&format!("k1:{}", &key_b64[..40])).unwrap_err(),
            MasterKey::parse(&format!("k1:{key_b64}#")).unwrap_err(),
            MasterKey::parse(&format!("{key_b64}:{key_b64}")).unwrap_err(),
            KeyRing::parse(&format!("{}\n{}", &*encoded, &*encoded)).unwrap_err(),
            CipherError::Random,
            CipherError::Seal,
            CipherError::EmptyRing,
        ];
        // One of each variant, so this is also where each gets a code of its own.
        let codes: std::collections::HashSet<_> = errors.iter().map(CipherError::code).collect();
        assert_eq!(codes.len(), 8, "{codes:?}");
        assert!(codes
            .iter()
            .all(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        let opened = ring.open(ROW, &sealed).unwrap();
        let mut shown: Vec<String> = errors
            .iter()
            .flat_map(|e| [e.to_string(), format!("{e:?}")])
            .collect();
        shown.extend([format!("{master:?}"), format!("{ring:?}"), format!("{opened:?}")]);
        for text in &shown {
            let (key_part, body_part) = (&key_b64[..20], &body(&sealed)[..20]);
            for secret in [&key_b64, key_part, SECRET, &SECRET[6..], body(&sealed), body_part] {
                assert!(!text.contains(secret), "{text:?} shows {secret:?}");
            }
        }
        assert_eq!(format!("{master:?}"), r#"MasterKey { id: "k1", .. }"#);
        let ring_debug = r#"KeyRing { current: "k1", keys: ["k1", "old"] }"#;
        assert_eq!(format!("{ring:?}"), ring_debug);
    }

    proptest! {
        #[test]
        fn any_secret_text_round_trips_for_any_context(secret in any::<String>(), context in ".*") {
            let ring = KeyRing::new(key("k1", 11));
            let sealed = ring.seal(&context, &secret).unwrap();
            prop_assert!(sealed.bytes().all(|b| b.is_ascii_graphic()));
            prop_assert!(is_sealed(&sealed) && ring.is_current(&sealed));
            let opened = ring.open(&context, &sealed).unwrap();
            prop_assert_eq!(opened.as_str(), secret.as_str());
        }

        #[test]
        fn any_changed_character_of_sealed_text_never_opens(
            secret in "[ -~]{0,64}",
            index in any::<prop::sample::Index>(),
            replacement in 0x20u8..0x7f,
        ) {
            let ring = KeyRing::new(key("k1", 12)).with_key(key("k2", 13)).unwrap();
            let mut sealed = ring.seal(ROW, &secret).unwrap().into_bytes();
            let at = index.index(sealed.len());
            prop_assume!(sealed[at] != replacement);
            sealed[at] = replacement;
            let changed = String::from_utf8(sealed).unwrap();
            prop_assert!(ring.open(ROW, &changed).is_err(), "{} opened", changed);
        }

        #[test]
        fn any_flipped_bit_of_nonce_ciphertext_or_tag_fails_to_open(
            secret in "[ -~]{0,64}",
            index in any::<prop::sample::Index>(),
            bit in 0u32..8,
        ) {
            let ring = KeyRing::new(key("k1", 14));
            let sealed = ring.seal(ROW, &secret).unwrap();
            let mut raw = URL_SAFE_NO_PAD.decode(body(&sealed)).unwrap();
            let at = index.index(raw.len());
            raw[at] ^= 1 << bit;
            let flipped = format!("wdenc1.k1.{}", URL_SAFE_NO_PAD.encode(raw));
            prop_assert_eq!(ring.open(ROW, &flipped), Err(CipherError::Open));
        }
    }
}
