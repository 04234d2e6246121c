//! Endpoint signing keys over their life: rotation with an overlap, ed25519 public keys published to
//! receivers, and sealing every stored key with the dispatcher's [`SecretCipher`].
//!
//! An endpoint signs each attempt with every key that has not expired at that attempt, newest first, in the
//! one `webhook-signature` header, so a receiver still on the previous secret and one already on the new
//! one both verify during the grace period; after it, only the newest key signs. The current key has no
//! expiry; a rotation gives every older unexpired key the end of its grace period (never a later one than
//! it had), keeps at most [`MAX_ENDPOINT_KEYS`] signing, and purges keys already expired, so their secrets
//! do not outlive their use. Receivers tell keys apart only through the published key set, never by a
//! header they would have to trust.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, SubsecRound as _, Utc};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::dispatcher::Dispatcher;
use crate::endpoint::check_chars;
use crate::error::{DispatchError, StorageError};
use crate::id;
use crate::keyring::{is_sealed, SecretCipher};
use crate::message::MAX_KEY_CHARS;
use crate::signing::{Ed25519PublicKey, EndpointSecret, SignatureScheme, SigningSecret};
use crate::store::{Executor, Row, Value};

/// How long previous keys keep signing after a rotation unless told otherwise: 24 hours.
pub const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest accepted grace period: 7 days.
pub const MAX_ROTATION_GRACE: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Most keys signing an endpoint's deliveries at once, the new one included: each costs every delivery a
/// signature, and a receiver needs no more to move between secrets.
pub const MAX_ENDPOINT_KEYS: usize = 10;
/// Keys [`Dispatcher::rekey`] reads per statement (each batch is then resealed in one statement).
pub const DEFAULT_REKEY_BATCH: u32 = 500;

/// Input to [`Dispatcher::rotate_secret`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotateSecret {
    /// The new key (`whsec_…` or `whsk_…`); `None`: one is generated.
    pub new: Option<SigningSecret>,
    /// The scheme of a generated key (`None`: the endpoint's current one, so a rotation switches schemes only
    /// when asked). Must match `new` when both are given.
    pub signature: Option<SignatureScheme>,
    /// How long the previous keys keep signing (`None`: [`DEFAULT_ROTATION_GRACE`]; at most
    /// [`MAX_ROTATION_GRACE`]; zero ends them at once).
    pub grace: Option<Duration>,
}

/// One of an endpoint's keys, without its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointKey {
    /// `key_…` id, as published in the key set.
    pub id: String,
    /// `hmac-sha256` or `ed25519`.
    #[serde(serialize_with = "scheme_name")]
    pub algorithm: SignatureScheme,
    /// The ed25519 public key (`whpk_…`); `None` for HMAC keys, whose secret is never read back.
    pub public_key: Option<String>,
    /// When it started signing.
    pub not_before: DateTime<Utc>,
    /// When it stops signing; `None` for the current key.
    pub not_after: Option<DateTime<Utc>>,
}

fn scheme_name<S: serde::Serializer>(scheme: &SignatureScheme, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(scheme.as_str())
}

/// The result of [`Dispatcher::rotate_secret`]: the new key, and its secret once.
#[derive(Clone, Debug)]
pub struct RotatedSecret {
    /// The new current key.
    pub key: EndpointKey,
    /// The new HMAC secret, to give the endpoint's owner — returned here once and never again. `None` for an
    /// ed25519 key, whose signing key never leaves the sender (receivers use [`EndpointKey::public_key`]).
    pub secret: Option<EndpointSecret>,
}

/// An ed25519 key in an owner's [`KeySet`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublishedKey {
    /// `key_…` id.
    pub id: String,
    /// The endpoint it signs for.
    pub endpoint_id: String,
    /// Always `ed25519`: HMAC keys have nothing public.
    #[serde(serialize_with = "scheme_name")]
    pub algorithm: SignatureScheme,
    /// `whpk_…`.
    pub public_key: String,
    /// When it started signing.
    pub not_before: DateTime<Utc>,
    /// When it stops signing; `None` for a current key.
    pub not_after: Option<DateTime<Utc>>,
}

/// The public keys an owner's receivers may trust: every unexpired ed25519 key of its endpoints. A verifier
/// fetches and caches this document and accepts a `v1a` signature made by any key in it for the endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeySet {
    /// The owner.
    pub owner_id: String,
    /// Its keys, by endpoint, newest first within each.
    pub keys: Vec<PublishedKey>,
}

/// What [`Dispatcher::rekey`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RekeyReport {
    /// Keys read that were not sealed under the current master key.
    pub examined: u64,
    /// Keys now sealed under it.
    pub resealed: u64,
    /// Keys changed by someone else meanwhile (a rotation), left to that writer, which sealed them anew.
    pub raced: u64,
    /// Keys that did not open — sealed under a master key missing from the ring, or altered — left as they
    /// are. They cannot sign until their master key is back in the ring: anything but zero needs an operator.
    pub unopened: u64,
}

impl<E: Executor> Dispatcher<E> {
    /// Gives an endpoint a new signing key. During `grace` every delivery is signed by the new key and by
    /// each previous unexpired key (newest first), so receivers move to the new secret at their own pace;
    /// a retry of an older message is signed with the keys valid at that attempt. Returns the new HMAC
    /// secret once (never for ed25519, whose public key is in the result instead).
    ///
    /// `unknown_endpoint` for an unknown or deleted endpoint; `invalid_input` for a grace period over 7 days
    /// or a `signature` that contradicts `new`.
    pub async fn rotate_secret(
        &self,
        endpoint_id: &str,
        input: RotateSecret,
    ) -> Result<RotatedSecret, DispatchError> {
        check_chars("endpoint_id", endpoint_id, MAX_KEY_CHARS, false)?;
        let grace = input.grace.unwrap_or(DEFAULT_ROTATION_GRACE);
        if grace > MAX_ROTATION_GRACE {
            return Err(DispatchError::InvalidInput {
                field: "grace",
                reason: "must be at most 7 days",
            });
        }
        let new = match (input.new, input.signature) {
            (Some(new), Some(scheme)) if new.scheme() != scheme => {
                return Err(DispatchError::InvalidInput {
                    field: "signature",
                    reason: "does not match the given key",
                })
            }
            (Some(new), _) => new,
            (None, Some(scheme)) => SigningSecret::generate(scheme),
            (None, None) => SigningSecret::generate(self.current_scheme(endpoint_id).await?),
        };
        let now = stored_time(self.settings().clock.now());
        // Within 7 days of now, so the addition cannot overflow.
        let grace_end = now + chrono::Duration::from_std(grace).expect("grace is at most 7 days");
        let key_id = id::key_id();
        let public_key = new.public_key();
        let params = [
            Value::from(endpoint_id),
            Value::from(key_id.as_str()),
            Value::from(new.scheme().as_str()),
            Value::from(self.seal(&key_id, new.expose())?),
            public_key
                .as_ref()
                .map_or(Value::Null, |k| Value::from(k.as_str())),
            Value::from(now),
            Value::from(grace_end),
            Value::from(MAX_ENDPOINT_KEYS as i64),
        ];
        let rows = self.query(self.sql().rotate_key, &params).await?;
        if rows.is_empty() {
            return Err(DispatchError::UnknownEndpoint);
        }
        let (key, secret) = current_key(key_id, new, now);
        Ok(RotatedSecret { key, secret })
    }

    /// Ends the overlap of the previous keys now (after a leak): from the next attempt on, only the current
    /// key signs. Returns how many keys it ended; `unknown_endpoint` for an unknown or deleted endpoint.
    pub async fn expire_previous_secrets(&self, endpoint_id: &str) -> Result<u64, DispatchError> {
        check_chars("endpoint_id", endpoint_id, MAX_KEY_CHARS, false)?;
        let now = self.settings().clock.now();
        let rows = self
            .query(self.sql().expire_previous_keys, &[endpoint_id.into(), now.into()])
            .await?;
        let row = rows.first().ok_or(DispatchError::UnknownEndpoint)?;
        Ok(u64::try_from(row.int(1)?).unwrap_or(0))
    }

    /// The endpoint's unexpired keys, newest first (the current one first), without their secrets.
    pub async fn endpoint_keys(&self, endpoint_id: &str) -> Result<Vec<EndpointKey>, DispatchError> {
        check_chars("endpoint_id", endpoint_id, MAX_KEY_CHARS, false)?;
        let now = self.settings().clock.now();
        let rows = self
            .query(self.sql().select_endpoint_keys, &[endpoint_id.into(), now.into()])
            .await?;
        // Every endpoint has a current key, which never expires: no row means no such endpoint.
        if rows.is_empty() {
            return Err(DispatchError::UnknownEndpoint);
        }
        rows.iter().map(|row| Ok(key_from_row(row, 0)?)).collect()
    }

    /// The key set document of an owner: every unexpired ed25519 public key of its endpoints (empty when it
    /// has none, or no endpoint at all — a key set says what to trust, and trusting nothing is right then).
    pub async fn owner_key_set(&self, owner_id: &str) -> Result<KeySet, DispatchError> {
        crate::endpoint::check_owner_id(owner_id)?;
        let now = self.settings().clock.now();
        let rows = self
            .query(self.sql().select_owner_keys, &[owner_id.into(), now.into()])
            .await?;
        let keys = rows
            .iter()
            .map(|row| {
                let key = key_from_row(row, 1)?;
                Ok(PublishedKey {
                    endpoint_id: row.text(0)?,
                    public_key: key
                        .public_key
                        .ok_or_else(|| StorageError::decode("ed25519 key without a public key"))?,
                    id: key.id,
                    algorithm: key.algorithm,
                    not_before: key.not_before,
                    not_after: key.not_after,
                })
            })
            .collect::<Result<_, StorageError>>()?;
        Ok(KeySet {
            owner_id: owner_id.to_owned(),
            keys,
        })
    }

    /// Seals every stored key that is not sealed under the cipher's current master key — plaintext rows of
    /// databases older than encryption at rest, and rows of a previous master key — reading keys in batches
    /// of `batch` (`None`: 500) in id order. Safe beside live workers and rotations: a row is replaced only
    /// if it still holds what was read, and workers open either form as long as their ring holds both master
    /// keys. Resumable: an interrupted run just runs again, and rows it already sealed are left alone. Keys
    /// that do not open (sealed under a master key missing from the ring) are left as they are and counted
    /// in [`RekeyReport::unopened`], after every other key is done.
    pub async fn rekey(&self, batch: Option<u32>) -> Result<RekeyReport, DispatchError> {
        let cipher = self.cipher().ok_or(DispatchError::InvalidInput {
            field: "secret_cipher",
            reason: "rekeying needs a key ring",
        })?;
        let limit = i64::from(batch.unwrap_or(DEFAULT_REKEY_BATCH).clamp(1, 10_000));
        let mut report = RekeyReport::default();
        let mut after = String::new();
        loop {
            let params = [after.as_str().into(), limit.into()];
            let rows = self.query(self.sql().select_keys_to_rekey, &params).await?;
            let Some(last) = rows.last() else { break };
            after = last.text(0)?;
            let (mut ids, mut old, mut new) = (Vec::new(), Vec::new(), Vec::new());
            for row in &rows {
                let (id, stored) = (row.text(0)?, row.text(1)?);
                if cipher.is_current(&stored) {
                    continue;
                }
                report.examined += 1;
                match open_stored(Some(cipher), &id, &stored).and_then(|plain| cipher.seal(&id, &plain)) {
                    Ok(sealed) => {
                        ids.push(id);
                        old.push(stored);
                        new.push(sealed);
                    }
                    Err(_) => report.unopened += 1,
                }
            }
            if ids.is_empty() {
                continue;
            }
            let attempted = ids.len() as u64;
            let params = [Value::from(ids), Value::from(old), Value::from(new)];
            let updated = self.query(self.sql().update_key_secrets, &params).await?.len() as u64;
            report.resealed += updated;
            report.raced += attempted - updated;
        }
        Ok(report)
    }

    /// The endpoint's current scheme (that of its current key).
    async fn current_scheme(&self, endpoint_id: &str) -> Result<SignatureScheme, DispatchError> {
        let keys = self.endpoint_keys(endpoint_id).await?;
        Ok(keys.first().map_or(SignatureScheme::HmacSha256, |k| k.algorithm))
    }

    /// `secret` as stored in the row of key `key_id`: sealed by the cipher, or plaintext without one.
    pub(crate) fn seal(&self, key_id: &str, secret: &str) -> Result<String, DispatchError> {
        match self.cipher() {
            Some(cipher) => cipher.seal(key_id, secret).map_err(DispatchError::Cipher),
            None => Ok(secret.to_owned()),
        }
    }

    fn cipher(&self) -> Option<&dyn SecretCipher> {
        self.settings().cipher.as_deref()
    }
}

/// A key just stored as the endpoint's current one (from `now` on, no end), and its secret when that may be
/// shown (HMAC: once, to the endpoint's owner; an ed25519 signing key never leaves the sender).
pub(crate) fn current_key(
    id: String,
    secret: SigningSecret,
    now: DateTime<Utc>,
) -> (EndpointKey, Option<EndpointSecret>) {
    let key = EndpointKey {
        id,
        algorithm: secret.scheme(),
        public_key: secret.public_key().map(|k| k.as_str().to_owned()),
        not_before: now,
        not_after: None,
    };
    let shown = match secret {
        SigningSecret::Hmac(secret) => Some(secret),
        _ => None,
    };
    (key, shown)
}

/// `t` as every engine stores it (to the microsecond), so a key returned by a call equals the key read back.
pub(crate) fn stored_time(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// What a key row's secret holds: plaintext rows (written before encryption at rest, or by a dispatcher
/// without a cipher) are read as they are; sealed ones need the cipher.
pub(crate) fn open_stored(
    cipher: Option<&dyn SecretCipher>,
    key_id: &str,
    stored: &str,
) -> Result<Zeroizing<String>, crate::keyring::CipherError> {
    if !is_sealed(stored) {
        return Ok(Zeroizing::new(stored.to_owned()));
    }
    match cipher {
        Some(cipher) => cipher.open(key_id, stored),
        None => Err(crate::keyring::CipherError::UnknownKey {
            key_id: String::from("(no key ring)"),
        }),
    }
}

/// Keys opened before, by key id, with the stored text they were opened from. Every claimed message carries
/// its endpoint's keys, and opening one costs a decryption and, for ed25519, deriving the public key (a
/// scalar multiplication, ~10 times an HMAC signature): measured 3 µs per HMAC key and 38 µs per ed25519
/// key, per message. A key's stored text changes only when it is resealed (then it misses and is opened
/// again); bounded, it is emptied when full rather than tracking use.
#[derive(Default)]
pub(crate) struct OpenedKeys(Mutex<HashMap<String, (String, SigningSecret)>>);

/// Most keys [`OpenedKeys`] holds: the keys of a few thousand busy endpoints.
const MAX_OPENED_KEYS: usize = 4096;

impl OpenedKeys {
    /// The signing keys a claim returned for an endpoint (`id stored id stored …`, newest first), opened.
    /// `None` when any of them does not open or parse: signing with only some keys would fail receivers
    /// that moved to a key left out, so such an attempt is refused instead.
    pub(crate) fn open(&self, cipher: Option<&dyn SecretCipher>, listed: &str) -> Option<Vec<SigningSecret>> {
        let mut parts = listed.split(' ').filter(|p| !p.is_empty());
        let mut keys = Vec::new();
        while let Some(id) = parts.next() {
            let stored = parts.next()?;
            keys.push(self.one(cipher, id, stored)?);
        }
        (!keys.is_empty()).then_some(keys)
    }

    fn one(&self, cipher: Option<&dyn SecretCipher>, id: &str, stored: &str) -> Option<SigningSecret> {
        let cached = self
            .lock()
            .get(id)
            .filter(|(was, _)| was == stored)
            .map(|(_, k)| k.clone());
        if cached.is_some() {
            return cached;
        }
        // Opened outside the lock: a decryption should not hold up other claims' lookups.
        let secret = SigningSecret::parse(&open_stored(cipher, id, stored).ok()?).ok()?;
        let mut opened = self.lock();
        if opened.len() >= MAX_OPENED_KEYS {
            opened.clear();
        }
        opened.insert(id.to_owned(), (stored.to_owned(), secret.clone()));
        Some(secret)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, SigningSecret)>> {
        // A panic while holding it cannot leave the map half-updated in a way that matters: entries are
        // whole values, so a poisoned lock is used as it is.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `id, algorithm, public_key, created_at, expires_at` of a key, from column `at` of `row` on.
fn key_from_row(row: &Row, at: usize) -> Result<EndpointKey, StorageError> {
    let algorithm = row.text(at + 1)?;
    let public_key = row.opt_text(at + 2)?;
    if let Some(key) = &public_key {
        Ed25519PublicKey::parse(key).map_err(|_| StorageError::decode("stored public key"))?;
    }
    Ok(EndpointKey {
        id: row.text(at)?,
        algorithm: SignatureScheme::parse(&algorithm).ok_or_else(|| StorageError::decode("key algorithm"))?,
        public_key,
        not_before: row.timestamp(at + 3)?,
        not_after: row.opt_timestamp(at + 4)?,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::keyring::{CipherError, KeyRing, MasterKey};

    /// A key ring that counts how often it opens.
    struct Counting(KeyRing, AtomicUsize);

    impl SecretCipher for Counting {
        fn seal(&self, context: &str, secret: &str) -> Result<String, CipherError> {
            self.0.seal(context, secret)
        }
        fn open(&self, context: &str, sealed: &str) -> Result<Zeroizing<String>, CipherError> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.open(context, sealed)
        }
        fn is_current(&self, sealed: &str) -> bool {
            self.0.is_current(sealed)
        }
    }

    fn sealed(cipher: &Counting, id: &str, secret: &SigningSecret) -> String {
        format!("{id} {}", cipher.seal(id, secret.expose()).unwrap())
    }

    #[test]
    fn opened_keys_decrypt_each_stored_key_once_and_again_only_when_it_was_resealed() {
        let cipher = Counting(
            KeyRing::new(MasterKey::generate("k").unwrap()),
            AtomicUsize::new(0),
        );
        let (hmac, ed) = (
            SigningSecret::generate(SignatureScheme::HmacSha256),
            SigningSecret::generate(SignatureScheme::Ed25519),
        );
        let listed = format!(
            "{} {}",
            sealed(&cipher, "key_b", &ed),
            sealed(&cipher, "key_a", &hmac)
        );
        let opened = OpenedKeys::default();
        for _ in 0..3 {
            assert_eq!(
                opened.open(Some(&cipher), &listed),
                Some(vec![ed.clone(), hmac.clone()])
            );
        }
        assert_eq!(cipher.1.load(Ordering::SeqCst), 2, "each key opened once");
        // Resealed (a rekey): another stored text for the same id is opened again.
        let resealed = sealed(&cipher, "key_a", &hmac);
        assert_eq!(opened.open(Some(&cipher), &resealed), Some(vec![hmac.clone()]));
        assert_eq!(cipher.1.load(Ordering::SeqCst), 3);
        // Plaintext rows (from before encryption at rest) need no cipher; a key that does not open, or an odd
        // list, makes the whole set unusable.
        let plain = format!("key_p {}", hmac.expose());
        assert_eq!(opened.open(None, &plain), Some(vec![hmac.clone()]));
        assert_eq!(
            opened.open(None, &format!("key_x {}", resealed.split(' ').nth(1).unwrap())),
            None
        );
        assert_eq!(opened.open(Some(&cipher), "key_a"), None);
        assert_eq!(opened.open(Some(&cipher), ""), None);
    }

    #[test]
    fn opened_keys_stay_bounded() {
        let opened = OpenedKeys::default();
        let secret = SigningSecret::generate(SignatureScheme::HmacSha256);
        for i in 0..MAX_OPENED_KEYS + 10 {
            let listed = format!("key_{i} {}", secret.expose());
            assert!(opened.open(None, &listed).is_some());
        }
        assert!(opened.lock().len() <= MAX_OPENED_KEYS);
    }
}
