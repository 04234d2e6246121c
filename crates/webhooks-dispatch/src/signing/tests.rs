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

// --- Several keys and ed25519 (`v1a`) ---

/// RFC 8032 section 7.1, test 1: a seed and the public key it must derive.
const RFC8032_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// The base64 after a key's prefix, decoded: what an independent implementation is given, so it does not
/// depend on our parsing.
fn key_bytes(text: &str) -> Vec<u8> {
    let (_, encoded) = text.split_once('_').unwrap();
    BASE64.decode(encoded).unwrap()
}

fn whsk(bytes: &[u8]) -> String {
    format!("whsk_{}", BASE64.encode(bytes))
}

fn whpk(bytes: &[u8]) -> String {
    format!("whpk_{}", BASE64.encode(bytes))
}

/// The one `v1a` entry of a header, decoded, and checked by ring (an implementation independent of
/// ed25519-dalek) against the content signed per the spec, spelled out here rather than taken from the code.
fn ring_verifies(public: &Ed25519PublicKey, msg_id: &str, ts: &str, body: &[u8], header: &str) -> bool {
    let encoded = header.strip_prefix("v1a,").expect("a v1a entry");
    let signature = BASE64.decode(encoded).unwrap();
    let content = [msg_id.as_bytes(), b".", ts.as_bytes(), b".", body].concat();
    let public_bytes = key_bytes(public.as_str());
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public_bytes)
        .verify(&content, &signature)
        .is_ok()
}

fn ed25519_secret(key: &Ed25519SigningKey) -> SigningSecret {
    SigningSecret::Ed25519(key.clone())
}

#[test]
fn invariant3_sign_all_hmac_keys_each_verify_alone_and_with_standardwebhooks() {
    let secrets = [
        EndpointSecret::generate(),
        EndpointSecret::generate(),
        EndpointSecret::generate(),
    ];
    let keys: Vec<SigningSecret> = secrets.iter().cloned().map(SigningSecret::Hmac).collect();
    // standardwebhooks checks the timestamp against its own clock, so the message is signed now.
    let now = chrono::Utc::now().timestamp();
    let ts = now.to_string();
    let body = br#"{"type":"invoice.paid"}"#;
    let header = sign_all(&keys, "msg_multi", now, body).unwrap();

    let mut map = http::HeaderMap::new();
    map.insert("webhook-id", http::HeaderValue::from_static("msg_multi"));
    map.insert("webhook-timestamp", http::HeaderValue::from_str(&ts).unwrap());
    map.insert("webhook-signature", http::HeaderValue::from_str(&header).unwrap());
    for secret in &secrets {
        verify_at(secret, headers("msg_multi", &ts, &header), body, now, 300).unwrap();
        standardwebhooks::Webhook::new(secret.expose())
            .unwrap()
            .verify(body, &map)
            .unwrap();
    }

    let stranger = EndpointSecret::generate();
    assert_eq!(
        verify_at(&stranger, headers("msg_multi", &ts, &header), body, now, 300),
        Err(VerifyError::Signature)
    );
    assert!(standardwebhooks::Webhook::new(stranger.expose())
        .unwrap()
        .verify(body, &map)
        .is_err());
}

#[test]
fn invariant3_sign_all_refuses_an_empty_key_list() {
    assert_eq!(sign_all(&[], "msg_x", SPEC_TS, SPEC_BODY), Err(InvalidSecret));
}

#[test]
fn invariant3_sign_all_with_the_spec_secret_gives_the_known_answer() {
    let keys = [SigningSecret::parse(SPEC_SECRET).unwrap()];
    assert_eq!(sign_all(&keys, SPEC_ID, SPEC_TS, SPEC_BODY).unwrap(), SPEC_SIG);
}

#[test]
fn invariant3_v1a_signature_verifies_with_ring_and_with_verify_ed25519() {
    let key = Ed25519SigningKey::generate();
    let public = key.public_key();
    let ts = SPEC_TS.to_string();
    let header = sign_all(&[ed25519_secret(&key)], SPEC_ID, SPEC_TS, SPEC_BODY).unwrap();
    assert!(header.starts_with("v1a,"));
    assert_eq!(BASE64.decode(&header[4..]).unwrap().len(), 64);

    assert!(ring_verifies(&public, SPEC_ID, &ts, SPEC_BODY, &header));
    verify_ed25519_at(&public, headers(SPEC_ID, &ts, &header), SPEC_BODY, SPEC_TS, 300).unwrap();

    // ed25519 signatures are deterministic, so ring, given the same seed, must produce the very same bytes.
    let pair = ring::signature::Ed25519KeyPair::from_seed_and_public_key(
        &key_bytes(key.expose()),
        &key_bytes(public.as_str()),
    )
    .expect("ring derives the same public key from the seed");
    let content = [SPEC_ID.as_bytes(), b".", ts.as_bytes(), b".", SPEC_BODY].concat();
    assert_eq!(header, format!("v1a,{}", BASE64.encode(pair.sign(&content))));
}

#[test]
fn invariant3_v1a_signature_under_another_key_fails() {
    let key = Ed25519SigningKey::generate();
    let other = Ed25519SigningKey::generate().public_key();
    let ts = SPEC_TS.to_string();
    let header = sign_all(&[ed25519_secret(&key)], SPEC_ID, SPEC_TS, SPEC_BODY).unwrap();
    assert!(!ring_verifies(&other, SPEC_ID, &ts, SPEC_BODY, &header));
    assert_eq!(
        verify_ed25519_at(&other, headers(SPEC_ID, &ts, &header), SPEC_BODY, SPEC_TS, 300),
        Err(VerifyError::Signature)
    );
}

/// A verifier checks its own scheme's entries only: an HMAC tag is not an ed25519 signature, and an ed25519
/// signature relabelled `v1` must not pass either check.
#[test]
fn invariant3_each_verifier_ignores_the_other_schemes_entries() {
    let hmac = EndpointSecret::parse(SPEC_SECRET).unwrap();
    let key = Ed25519SigningKey::generate();
    let public = key.public_key();
    let ts = SPEC_TS.to_string();
    let v1 = sign(&hmac, SPEC_ID, SPEC_TS, SPEC_BODY).unwrap();
    let v1a = sign_all(&[ed25519_secret(&key)], SPEC_ID, SPEC_TS, SPEC_BODY).unwrap();
    let relabelled = v1a.replacen("v1a,", "v1,", 1);
    let hmac_as_v1a = v1.replacen("v1,", "v1a,", 1);

    for only_other in [&v1, &relabelled] {
        assert_eq!(
            verify_ed25519_at(
                &public,
                headers(SPEC_ID, &ts, only_other),
                SPEC_BODY,
                SPEC_TS,
                300
            ),
            Err(VerifyError::Signature),
            "{only_other}"
        );
    }
    for only_other in [&v1a, &relabelled, &hmac_as_v1a] {
        assert_eq!(
            verify_at(&hmac, headers(SPEC_ID, &ts, only_other), SPEC_BODY, SPEC_TS, 300),
            Err(VerifyError::Signature),
            "{only_other}"
        );
    }
    let both = format!("{v1a} {v1}");
    verify_at(&hmac, headers(SPEC_ID, &ts, &both), SPEC_BODY, SPEC_TS, 300).unwrap();
    verify_ed25519_at(&public, headers(SPEC_ID, &ts, &both), SPEC_BODY, SPEC_TS, 300).unwrap();
}

#[test]
fn invariant3_verify_ed25519_rejects_missing_headers_and_malformed_entries() {
    let key = Ed25519SigningKey::generate();
    let public = key.public_key();
    let none = |_: &str| -> Option<&str> { None };
    assert_eq!(
        verify_ed25519_at(&public, none, SPEC_BODY, 0, 300),
        Err(VerifyError::MissingHeader)
    );
    let ts = SPEC_TS.to_string();
    let good = sign_all(&[ed25519_secret(&key)], SPEC_ID, SPEC_TS, SPEC_BODY).unwrap();
    // Garbage and truncated entries are skipped, and a good entry after them still counts.
    let truncated = &good[..good.len() - 4];
    let short = format!("v1a,{}", BASE64.encode([7u8; 32]));
    for junk in ["v1a,", "v1a,!!!", "v1a", truncated, short.as_str()] {
        assert_eq!(
            verify_ed25519_at(&public, headers(SPEC_ID, &ts, junk), SPEC_BODY, SPEC_TS, 300),
            Err(VerifyError::Signature),
            "{junk}"
        );
        let then_good = format!("{junk} {good}");
        verify_ed25519_at(
            &public,
            headers(SPEC_ID, &ts, &then_good),
            SPEC_BODY,
            SPEC_TS,
            300,
        )
        .unwrap();
    }
}

#[test]
fn mixed_header_keeps_the_keys_order() {
    let hmac1 = EndpointSecret::generate();
    let hmac2 = EndpointSecret::generate();
    let ed1 = Ed25519SigningKey::generate();
    let ed2 = Ed25519SigningKey::generate();
    let keys = [
        SigningSecret::Hmac(hmac1.clone()),
        ed25519_secret(&ed1),
        SigningSecret::Hmac(hmac2.clone()),
        ed25519_secret(&ed2),
    ];
    let header = sign_all(&keys, SPEC_ID, SPEC_TS, SPEC_BODY).unwrap();
    let entries: Vec<&str> = header.split(' ').collect();
    // Each key alone gives its own entry (ed25519 is deterministic), so the position shows whose it is.
    let alone =
        |key: &SigningSecret| sign_all(std::slice::from_ref(key), SPEC_ID, SPEC_TS, SPEC_BODY).unwrap();
    let expected: Vec<String> = keys.iter().map(alone).collect();
    assert_eq!(entries, expected);
    assert_eq!(entries[0], sign(&hmac1, SPEC_ID, SPEC_TS, SPEC_BODY).unwrap());
    assert_eq!(entries[2], sign(&hmac2, SPEC_ID, SPEC_TS, SPEC_BODY).unwrap());
    let ts = SPEC_TS.to_string();
    assert!(ring_verifies(
        &ed1.public_key(),
        SPEC_ID,
        &ts,
        SPEC_BODY,
        entries[1]
    ));
    assert!(ring_verifies(
        &ed2.public_key(),
        SPEC_ID,
        &ts,
        SPEC_BODY,
        entries[3]
    ));
    assert!(!ring_verifies(
        &ed1.public_key(),
        SPEC_ID,
        &ts,
        SPEC_BODY,
        entries[3]
    ));
}

#[test]
fn ed25519_key_from_the_rfc8032_seed_has_the_rfc8032_public_key() {
    let key = Ed25519SigningKey::parse(&whsk(&unhex(RFC8032_SEED))).unwrap();
    assert_eq!(key.public_key().as_str(), whpk(&unhex(RFC8032_PUBLIC)));
}

#[test]
fn ed25519_keys_round_trip_through_their_text() {
    let key = Ed25519SigningKey::generate();
    assert!(key.expose().starts_with(SIGNING_KEY_PREFIX));
    assert_eq!(key_bytes(key.expose()).len(), 32);
    assert_eq!(Ed25519SigningKey::parse(key.expose()).unwrap(), key);
    let public = key.public_key();
    assert!(public.as_str().starts_with(PUBLIC_KEY_PREFIX));
    assert_eq!(key_bytes(public.as_str()).len(), 32);
    assert_eq!(Ed25519PublicKey::parse(public.as_str()).unwrap(), public);
    assert_ne!(Ed25519SigningKey::generate(), key, "keys come from a CSPRNG");
    assert_ne!(Ed25519SigningKey::generate().public_key(), public);
}

#[test]
fn ed25519_signing_key_accepts_the_64_byte_pair_form_only_when_its_halves_match() {
    let key = Ed25519SigningKey::generate();
    let seed = key_bytes(key.expose());
    let pair = [seed.clone(), key_bytes(key.public_key().as_str())].concat();
    let from_pair = Ed25519SigningKey::parse(&whsk(&pair)).unwrap();
    assert_eq!(from_pair, key);
    assert_eq!(
        from_pair.expose(),
        key.expose(),
        "stored in the canonical seed form"
    );

    let stranger = key_bytes(Ed25519SigningKey::generate().public_key().as_str());
    let mismatched = [seed, stranger].concat();
    assert_eq!(Ed25519SigningKey::parse(&whsk(&mismatched)), Err(InvalidSecret));
}

#[test]
fn ed25519_keys_with_a_wrong_prefix_length_or_encoding_are_refused() {
    let key = Ed25519SigningKey::generate();
    let seed = key_bytes(key.expose());
    let public = key.public_key();
    let bare_seed = BASE64.encode(&seed);
    let hmac_form = format!("whsec_{bare_seed}");
    let pk_form = whpk(&seed);
    for bad in [
        "",
        "whsk_",
        "whsk_!!!",
        bare_seed.as_str(),
        hmac_form.as_str(),
        pk_form.as_str(),
        public.as_str(),
        &key.expose()[..key.expose().len() - 1],
    ] {
        assert_eq!(Ed25519SigningKey::parse(bad), Err(InvalidSecret), "{bad}");
    }
    for len in [1, 31, 33, 63, 65, 96] {
        assert_eq!(
            Ed25519SigningKey::parse(&whsk(&vec![9; len])),
            Err(InvalidSecret),
            "{len}"
        );
        assert_eq!(
            Ed25519PublicKey::parse(&whpk(&vec![9; len])),
            Err(InvalidSecret),
            "{len}"
        );
    }
    for bad in ["", "whpk_", "whpk_!!!", key.expose(), &public.as_str()[5..]] {
        assert_eq!(Ed25519PublicKey::parse(bad), Err(InvalidSecret), "{bad}");
    }
    // The identity point (y = 1) has small order: every signature check against it is meaningless.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert_eq!(Ed25519PublicKey::parse(&whpk(&identity)), Err(InvalidSecret));
}

#[test]
fn signing_secret_parse_dispatches_by_prefix() {
    let hmac = SigningSecret::parse(SPEC_SECRET).unwrap();
    assert_eq!(
        hmac,
        SigningSecret::Hmac(EndpointSecret::parse(SPEC_SECRET).unwrap())
    );
    assert_eq!(hmac.scheme(), SignatureScheme::HmacSha256);
    assert_eq!(hmac.expose(), SPEC_SECRET);
    assert_eq!(hmac.public_key(), None);

    let key = Ed25519SigningKey::generate();
    let ed = SigningSecret::parse(key.expose()).unwrap();
    assert_eq!(ed, SigningSecret::Ed25519(key.clone()));
    assert_eq!(ed.scheme(), SignatureScheme::Ed25519);
    assert_eq!(ed.expose(), key.expose());
    assert_eq!(ed.public_key(), Some(key.public_key()));

    for bad in ["", "whsk_", "whsk_AAAA", "whsec_", key.public_key().as_str()] {
        assert_eq!(SigningSecret::parse(bad), Err(InvalidSecret), "{bad}");
    }
}

#[test]
fn signing_secret_generate_gives_distinct_keys_of_the_scheme() {
    for scheme in [SignatureScheme::HmacSha256, SignatureScheme::Ed25519] {
        let key = SigningSecret::generate(scheme);
        assert_eq!(key.scheme(), scheme);
        assert_eq!(SigningSecret::parse(key.expose()).unwrap(), key);
        assert_ne!(SigningSecret::generate(scheme), key);
    }
}

#[test]
fn signature_scheme_names_round_trip_and_aliases_parse() {
    for scheme in [SignatureScheme::HmacSha256, SignatureScheme::Ed25519] {
        assert_eq!(SignatureScheme::parse(scheme.as_str()), Some(scheme));
        assert_eq!(SignatureScheme::parse(scheme.version()), Some(scheme));
    }
    assert_eq!(SignatureScheme::parse("hmac"), Some(SignatureScheme::HmacSha256));
    assert_eq!(SignatureScheme::HmacSha256.as_str(), "hmac-sha256");
    assert_eq!(SignatureScheme::Ed25519.as_str(), "ed25519");
    assert_eq!(SignatureScheme::HmacSha256.version(), "v1");
    assert_eq!(SignatureScheme::Ed25519.version(), "v1a");
    assert_eq!(SignatureScheme::default(), SignatureScheme::HmacSha256);
    for unknown in ["", "HMAC", "v2", "rsa", "ed25519 "] {
        assert_eq!(SignatureScheme::parse(unknown), None, "{unknown}");
    }
}

#[test]
fn invariant7_ed25519_keys_and_signing_secrets_redact_in_debug_display_and_errors() {
    let key = Ed25519SigningKey::generate();
    let seed_text = &key.expose()[SIGNING_KEY_PREFIX.len()..];
    let hmac = SigningSecret::generate(SignatureScheme::HmacSha256);
    let hmac_text = &hmac.expose()[SECRET_PREFIX.len()..];
    let ed = ed25519_secret(&key);
    let shown = [
        format!("{key:?}"),
        format!("{key:#?}"),
        format!("{key}"),
        format!("{ed:?}"),
        format!("{ed:#?}"),
        format!("{ed}"),
        format!("{:?}", [ed.clone(), hmac.clone()]),
    ];
    for text in &shown {
        assert!(!text.contains(seed_text), "{text}");
        assert!(!text.contains(hmac_text), "{text}");
    }
    assert_eq!(format!("{key}"), "whsk_[redacted]");
    assert_eq!(format!("{ed}"), "whsk_[redacted]");
    assert_eq!(format!("{hmac}"), "whsec_[redacted]");
    let mismatched = whsk(&[key_bytes(key.expose()), vec![0; 32]].concat());
    let error = Ed25519SigningKey::parse(&mismatched).unwrap_err();
    assert!(!format!("{error} {error:?}").contains(seed_text));
}

#[test]
fn ed25519_public_key_displays_its_text() {
    let public = Ed25519SigningKey::generate().public_key();
    assert_eq!(format!("{public}"), public.as_str());
    assert!(format!("{public:?}").contains(public.as_str()));
}

proptest! {
    // Unoptimised test builds of both ed25519 implementations take milliseconds per operation and each case
    // does seven; 64 cases keep this near three seconds (256 took twelve), still flipping bytes anywhere.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn invariant3_v1a_any_tampered_byte_id_or_timestamp_fails_ring_and_verify_ed25519(
        body in proptest::collection::vec(any::<u8>(), 1..512),
        flip_at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        id_tamper in any::<bool>(),
    ) {
        let key = Ed25519SigningKey::generate();
        let public = key.public_key();
        let header = sign_all(&[ed25519_secret(&key)], "msg_x", 1_700_000_000, &body).unwrap();
        let ts = "1700000000";
        prop_assert!(ring_verifies(&public, "msg_x", ts, &body, &header));
        let verdict = verify_ed25519_at(&public, headers("msg_x", ts, &header), &body, 1_700_000_000, 300);
        prop_assert!(verdict.is_ok());

        let mut tampered = body.clone();
        let i = flip_at.index(tampered.len());
        tampered[i] ^= flip;
        prop_assert!(!ring_verifies(&public, "msg_x", ts, &tampered, &header));
        prop_assert_eq!(
            verify_ed25519_at(&public, headers("msg_x", ts, &header), &tampered, 1_700_000_000, 300),
            Err(VerifyError::Signature)
        );

        let id = if id_tamper { "msg_y" } else { "msg_x" };
        let ts2 = if id_tamper { ts } else { "1700000001" };
        prop_assert!(!ring_verifies(&public, id, ts2, &body, &header));
        prop_assert_eq!(
            verify_ed25519_at(&public, headers(id, ts2, &header), &body, 1_700_000_000, 300),
            Err(VerifyError::Signature)
        );
    }
}

proptest! {
    /// Both verifiers read headers and apply the tolerance by the same code, so over any clock, timestamp and
    /// tolerance a header signed by both kinds of key gets the same verdict from each.
    #[test]
    fn invariant3_verify_ed25519_applies_the_same_timestamp_rules_as_verify(
        now in any::<i64>(),
        offset in prop_oneof![any::<i64>(), -1000i64..1000],
        far in any::<bool>(),
        tolerance in prop_oneof![any::<i64>(), 0i64..1000],
    ) {
        let hmac = EndpointSecret::parse(SPEC_SECRET).unwrap();
        let key = Ed25519SigningKey::parse(&whsk(&unhex(RFC8032_SEED))).unwrap();
        let timestamp = if far { offset } else { now.wrapping_add(offset) };
        let ts = timestamp.to_string();
        let keys = [SigningSecret::Hmac(hmac.clone()), ed25519_secret(&key)];
        let header = sign_all(&keys, SPEC_ID, timestamp, SPEC_BODY).unwrap();
        let h = headers(SPEC_ID, &ts, &header);
        let by_hmac = verify_at(&hmac, &h, SPEC_BODY, now, tolerance);
        let by_ed25519 = verify_ed25519_at(&key.public_key(), &h, SPEC_BODY, now, tolerance);
        prop_assert_eq!(by_hmac, by_ed25519);
        let within = u64::try_from(tolerance).is_ok_and(|t| now.abs_diff(timestamp) <= t);
        prop_assert_eq!(by_ed25519.is_ok(), within);
    }
}
