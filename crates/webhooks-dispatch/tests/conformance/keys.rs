//! Signing keys over their life, on every engine: rotation with an overlap (both secrets verify with the
//! independent `standardwebhooks` crate), ed25519 `v1a` signatures checked by an independent ed25519
//! implementation (`ring`), the published key set, and keys sealed at rest under a key ring that can move to
//! a new master key.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::Utc;
use webhooks_dispatch::keyring::{KeyRing, MasterKey, SecretCipher};
use webhooks_dispatch::signing::{verify_ed25519, Ed25519PublicKey, SignatureScheme, SigningSecret};
use webhooks_dispatch::store::Value;
use webhooks_dispatch::{
    DeliverDue, Dispatcher, NewEndpoint, NewMessage, Outcome, RetryPolicy, RotateSecret, MAX_ENDPOINT_KEYS,
};
use webhooks_dispatch_testkit::receiver::{Received, Reply};
use webhooks_dispatch_testkit::SecretForms;

use crate::conformance;
use crate::support::{Ctx, Engine, Exec, ManualClock};

conformance!(
    invariant3_during_the_grace_period_both_secrets_verify_and_after_it_only_the_new_one,
    invariant3_expiring_previous_secrets_ends_the_overlap_at_once,
    invariant3_a_retry_is_signed_with_the_keys_valid_at_that_attempt,
    invariant3_rotation_keeps_at_most_ten_keys_signing,
    invariant3_ed25519_deliveries_verify_with_an_independent_implementation_and_tampering_fails,
    invariant3_switching_to_ed25519_overlaps_the_hmac_secret_and_publishes_the_public_key,
    invariant1_rotation_refuses_bad_input_before_any_sql,
    invariant7_a_database_copied_without_its_key_yields_no_secret,
    invariant7_rekey_seals_plaintext_rows_and_moves_every_key_to_a_new_master_key,
);

type D = Dispatcher<Exec>;

/// A dispatcher on a clock that starts at the real time (so the independent verifier's tolerance accepts
/// the first deliveries) and moves only when told.
fn dispatcher(ctx: &Ctx) -> (D, Arc<ManualClock>) {
    let clock = ManualClock::at(Utc::now());
    let retry = RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_secs(10),
        max_delay: Duration::from_secs(10),
    };
    (ctx.dispatcher_at(clock.clone(), retry), clock)
}

/// Dispatches one message to `endpoint` and delivers it; returns what the receiver got.
async fn deliver_one(ctx: &Ctx, d: &D, endpoint: &str) -> Received {
    let before = ctx.receiver.count();
    d.dispatch(NewMessage::new(
        endpoint,
        "invoice.paid",
        serde_json::json!({"n": before}),
    ))
    .await
    .expect("dispatch");
    let report = d.deliver_due(DeliverDue::default()).await.expect("deliver");
    assert_eq!(report.attempted, 1, "{report:?}");
    ctx.receiver.received().pop().expect("a delivery")
}

fn header<'a>(got: &'a Received, name: &str) -> &'a str {
    got.headers[name].to_str().expect("text header")
}

/// The signatures of the `webhook-signature` header, in order.
fn signatures(got: &Received) -> Vec<String> {
    header(got, "webhook-signature")
        .split(' ')
        .map(str::to_owned)
        .collect()
}

/// Whether the independent `standardwebhooks` crate computes, for `secret`, one of the delivery's signatures
/// (its `verify` also checks the timestamp against the system clock, which moved tests leave behind).
fn independently_signed_by(secret: &str, got: &Received) -> bool {
    let independent = standardwebhooks::Webhook::new(secret).expect("a whsec_ secret");
    let ts: i64 = header(got, "webhook-timestamp").parse().unwrap();
    let expected = independent
        .sign(header(got, "webhook-id"), ts, &got.body)
        .expect("sign");
    signatures(got).contains(&expected)
}

/// Whether `ring`'s ed25519 (not this crate's) accepts one of the delivery's `v1a` signatures under `public`.
fn ring_verifies(public: &str, got: &Received, body: &[u8]) -> bool {
    let key = BASE64
        .decode(public.strip_prefix("whpk_").expect("a whpk_ key"))
        .unwrap();
    let signed = [
        header(got, "webhook-id").as_bytes(),
        b".",
        header(got, "webhook-timestamp").as_bytes(),
        b".",
        body,
    ]
    .concat();
    let verifier = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key);
    signatures(got).iter().any(|s| {
        s.strip_prefix("v1a,")
            .and_then(|sig| BASE64.decode(sig).ok())
            .is_some_and(|sig| verifier.verify(&signed, &sig).is_ok())
    })
}

async fn hmac_endpoint(ctx: &Ctx, d: &D) -> (String, String) {
    ctx.endpoint(d).await
}

fn rotate(grace: Duration) -> RotateSecret {
    RotateSecret {
        grace: Some(grace),
        ..RotateSecret::default()
    }
}

async fn invariant3_during_the_grace_period_both_secrets_verify_and_after_it_only_the_new_one(
    engine: Engine,
) {
    let ctx = Ctx::new(engine).await;
    let (d, clock) = dispatcher(&ctx);
    let (ep, old) = hmac_endpoint(&ctx, &d).await;
    let rotated = d
        .rotate_secret(&ep, rotate(Duration::from_secs(3600)))
        .await
        .unwrap();
    let new = rotated
        .secret
        .expect("a new HMAC secret, shown once")
        .expose()
        .to_owned();
    assert_ne!(new, old);
    assert_eq!(rotated.key.algorithm, SignatureScheme::HmacSha256);

    let got = deliver_one(&ctx, &d, &ep).await;
    assert_eq!(signatures(&got).len(), 2, "newest first, one per key");
    for secret in [&old, &new] {
        // The full independent check, timestamp included, while the clock is the real one.
        let independent = standardwebhooks::Webhook::new(secret).unwrap();
        independent
            .verify(&got.body, &got.headers)
            .expect("verifies under either secret");
        assert!(independently_signed_by(secret, &got));
    }
    assert!(independently_signed_by(&new, &got) && signatures(&got)[0].starts_with("v1,"));
    let keys = d.endpoint_keys(&ep).await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].id, rotated.key.id, "the current key first");
    assert_eq!(keys[0].not_after, None);
    let grace_end = keys[1].not_after.expect("the old key ends");
    assert_eq!(grace_end, rotated.key.not_before + chrono::Duration::hours(1));

    clock.advance(Duration::from_secs(3601));
    let got = deliver_one(&ctx, &d, &ep).await;
    assert_eq!(signatures(&got).len(), 1);
    assert!(independently_signed_by(&new, &got));
    assert!(
        !independently_signed_by(&old, &got),
        "the old secret no longer signs"
    );
    assert_eq!(d.endpoint_keys(&ep).await.unwrap().len(), 1);
}

async fn invariant3_expiring_previous_secrets_ends_the_overlap_at_once(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let (d, _clock) = dispatcher(&ctx);
    let (ep, old) = hmac_endpoint(&ctx, &d).await;
    let new = d.rotate_secret(&ep, RotateSecret::default()).await.unwrap();
    let new = new.secret.unwrap().expose().to_owned();
    let keys = d.endpoint_keys(&ep).await.unwrap();
    assert_eq!(
        keys[1].not_after,
        Some(keys[0].not_before + chrono::Duration::hours(24)),
        "the default grace is 24 hours"
    );
    assert_eq!(d.expire_previous_secrets(&ep).await.unwrap(), 1);
    assert_eq!(
        d.expire_previous_secrets(&ep).await.unwrap(),
        0,
        "nothing left to end"
    );
    let got = deliver_one(&ctx, &d, &ep).await;
    assert_eq!(signatures(&got).len(), 1);
    assert!(independently_signed_by(&new, &got) && !independently_signed_by(&old, &got));
}

async fn invariant3_a_retry_is_signed_with_the_keys_valid_at_that_attempt(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let (d, clock) = dispatcher(&ctx);
    let (ep, old) = hmac_endpoint(&ctx, &d).await;
    ctx.receiver
        .push_replies([Reply::status(500), Reply::status(500)]);
    let sent = d.dispatch(NewMessage::new(&ep, "a", 1)).await.unwrap();
    d.deliver_due(DeliverDue::default()).await.unwrap();
    let first = ctx.receiver.received().pop().unwrap();
    assert_eq!(signatures(&first).len(), 1);
    assert!(independently_signed_by(&old, &first));

    let rotated = d
        .rotate_secret(&ep, rotate(Duration::from_secs(15)))
        .await
        .unwrap();
    let new = rotated.secret.unwrap().expose().to_owned();
    // Past the retry time (10 s after the attempt ended, which took some real time too).
    clock.advance(Duration::from_secs(11));
    d.deliver_due(DeliverDue::default()).await.unwrap();
    let second = ctx.receiver.received().pop().unwrap();
    assert_eq!(
        header(&second, "webhook-id"),
        sent.message_id,
        "the same message, retried"
    );
    assert!(independently_signed_by(&old, &second) && independently_signed_by(&new, &second));

    clock.advance(Duration::from_secs(11));
    d.deliver_due(DeliverDue::default()).await.unwrap();
    let third = ctx.receiver.received().pop().unwrap();
    assert_eq!(header(&third, "webhook-id"), sent.message_id);
    assert_eq!(
        signatures(&third).len(),
        1,
        "the grace period is over at the third attempt"
    );
    assert!(independently_signed_by(&new, &third) && !independently_signed_by(&old, &third));
    let attempts = d.list_attempts(&sent.message_id).await.unwrap();
    assert_eq!(attempts.last().unwrap().outcome, Outcome::Delivered);
}

async fn invariant3_rotation_keeps_at_most_ten_keys_signing(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let (d, clock) = dispatcher(&ctx);
    let (ep, first) = hmac_endpoint(&ctx, &d).await;
    let mut secrets = vec![first];
    for _ in 0..MAX_ENDPOINT_KEYS + 2 {
        clock.advance(Duration::from_millis(1));
        let rotated = d.rotate_secret(&ep, RotateSecret::default()).await.unwrap();
        secrets.push(rotated.secret.unwrap().expose().to_owned());
    }
    let keys = d.endpoint_keys(&ep).await.unwrap();
    assert_eq!(keys.len(), MAX_ENDPOINT_KEYS);
    let got = deliver_one(&ctx, &d, &ep).await;
    assert_eq!(signatures(&got).len(), MAX_ENDPOINT_KEYS);
    let (ended, signing) = secrets.split_at(secrets.len() - MAX_ENDPOINT_KEYS);
    assert!(signing.iter().all(|s| independently_signed_by(s, &got)));
    assert!(
        ended.iter().all(|s| !independently_signed_by(s, &got)),
        "the oldest ones ended"
    );
    // Ended keys are purged by the next rotation: their secrets have no use left.
    d.rotate_secret(&ep, RotateSecret::default()).await.unwrap();
    let stored = ctx
        .scalar(
            "SELECT count(*) FROM webhooks_dispatch_endpoint_keys WHERE endpoint_id = $1",
            &[ep.as_str().into()],
        )
        .await;
    assert!(stored <= MAX_ENDPOINT_KEYS as i64 + 1, "{stored} key rows kept");
}

async fn invariant3_ed25519_deliveries_verify_with_an_independent_implementation_and_tampering_fails(
    engine: Engine,
) {
    let ctx = Ctx::new(engine).await;
    let (d, _clock) = dispatcher(&ctx);
    let registered = d
        .register_endpoint(NewEndpoint::new("owner_ed", ctx.url()).signature(SignatureScheme::Ed25519))
        .await
        .unwrap();
    assert!(
        registered.secret.is_none(),
        "an ed25519 signing key never leaves the sender"
    );
    let public = registered.key.public_key.clone().expect("the public key");
    assert!(public.starts_with("whpk_"));
    assert_eq!(
        d.endpoint_keys(&registered.id).await.unwrap()[0].public_key,
        Some(public.clone())
    );

    let got = deliver_one(&ctx, &d, &registered.id).await;
    let sigs = signatures(&got);
    assert_eq!(sigs.len(), 1);
    assert!(sigs[0].starts_with("v1a,"), "{sigs:?}");
    assert!(ring_verifies(&public, &got, &got.body));
    let ours = Ed25519PublicKey::parse(&public).unwrap();
    verify_ed25519(
        &ours,
        |n| got.headers.get(n).and_then(|v| v.to_str().ok()),
        &got.body,
    )
    .unwrap();
    for i in 0..got.body.len() {
        let mut body = got.body.to_vec();
        body[i] ^= 0x01;
        assert!(!ring_verifies(&public, &got, &body), "byte {i}");
        let header = |n: &str| got.headers.get(n).and_then(|v| v.to_str().ok());
        assert!(verify_ed25519(&ours, header, &body).is_err(), "byte {i}");
    }
    let other = SigningSecret::generate(SignatureScheme::Ed25519)
        .public_key()
        .unwrap();
    assert!(
        !ring_verifies(other.as_str(), &got, &got.body),
        "another key does not verify"
    );
}

async fn invariant3_switching_to_ed25519_overlaps_the_hmac_secret_and_publishes_the_public_key(
    engine: Engine,
) {
    let ctx = Ctx::new(engine).await;
    let (d, clock) = dispatcher(&ctx);
    let (ep, old) = hmac_endpoint(&ctx, &d).await;
    let rotated = d
        .rotate_secret(
            &ep,
            RotateSecret {
                signature: Some(SignatureScheme::Ed25519),
                grace: Some(Duration::from_secs(60)),
                ..RotateSecret::default()
            },
        )
        .await
        .unwrap();
    assert!(rotated.secret.is_none());
    let public = rotated.key.public_key.clone().unwrap();

    let got = deliver_one(&ctx, &d, &ep).await;
    let sigs = signatures(&got);
    assert_eq!(sigs.len(), 2);
    assert!(
        sigs[0].starts_with("v1a,") && sigs[1].starts_with("v1,"),
        "newest first: {sigs:?}"
    );
    assert!(ring_verifies(&public, &got, &got.body));
    assert!(independently_signed_by(&old, &got));

    // The key set: the owner's unexpired ed25519 keys, and nothing about HMAC keys.
    let set = d.owner_key_set("owner_1").await.unwrap();
    assert_eq!(set.keys.len(), 1);
    let published = &set.keys[0];
    assert_eq!(
        (
            published.id.as_str(),
            published.endpoint_id.as_str(),
            published.public_key.as_str()
        ),
        (rotated.key.id.as_str(), ep.as_str(), public.as_str())
    );
    let document = serde_json::to_value(&set).unwrap();
    assert_eq!(document["keys"][0]["algorithm"], "ed25519");
    assert!(document["keys"][0]["not_before"].is_string());
    assert!(d.owner_key_set("nobody").await.unwrap().keys.is_empty());

    // A rotation keeps the scheme unless told otherwise.
    clock.advance(Duration::from_secs(61));
    let again = d.rotate_secret(&ep, RotateSecret::default()).await.unwrap();
    assert_eq!(again.key.algorithm, SignatureScheme::Ed25519);
    let got = deliver_one(&ctx, &d, &ep).await;
    assert_eq!(signatures(&got).len(), 2, "the two ed25519 keys overlap");
    assert!(
        !independently_signed_by(&old, &got),
        "the HMAC secret's grace is over"
    );
    let set = d.owner_key_set("owner_1").await.unwrap();
    assert_eq!(set.keys.len(), 2);
    assert_eq!(set.keys[0].id, again.key.id, "newest first");
}

async fn invariant1_rotation_refuses_bad_input_before_any_sql(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let (ep, _) = hmac_endpoint(&ctx, &d).await;
    let too_long = rotate(Duration::from_secs(7 * 24 * 3600 + 1));
    assert_eq!(
        d.rotate_secret(&ep, too_long).await.unwrap_err().code(),
        "invalid_input"
    );
    let mismatched = RotateSecret {
        new: Some(SigningSecret::generate(SignatureScheme::HmacSha256)),
        signature: Some(SignatureScheme::Ed25519),
        grace: None,
    };
    assert_eq!(
        d.rotate_secret(&ep, mismatched).await.unwrap_err().code(),
        "invalid_input"
    );
    for unknown in ["ep_missing", ""] {
        let code = d
            .rotate_secret(unknown, RotateSecret::default())
            .await
            .unwrap_err()
            .code();
        assert!(["unknown_endpoint", "invalid_input"].contains(&code), "{code}");
        assert!(d.expire_previous_secrets(unknown).await.is_err());
        assert!(d.endpoint_keys(unknown).await.is_err());
    }
    // A caller's own secret is taken as given, and a deleted endpoint has no keys left at all.
    let own = SigningSecret::generate(SignatureScheme::HmacSha256);
    let given = RotateSecret {
        new: Some(own.clone()),
        ..RotateSecret::default()
    };
    let rotated = d.rotate_secret(&ep, given).await.unwrap();
    assert_eq!(rotated.secret.unwrap().expose(), own.expose());
    d.delete_endpoint(&ep).await.unwrap();
    assert_eq!(
        d.rotate_secret(&ep, RotateSecret::default())
            .await
            .unwrap_err()
            .code(),
        "unknown_endpoint"
    );
    let left = ctx
        .scalar(
            "SELECT count(*) FROM webhooks_dispatch_endpoint_keys WHERE endpoint_id = $1",
            &[ep.as_str().into()],
        )
        .await;
    assert_eq!(left, 0, "a deleted endpoint's secrets are destroyed");
}

/// The test configuration without a key ring: keys it writes are plaintext, and it opens no sealed one.
fn without_cipher(ctx: &Ctx) -> D {
    Dispatcher::builder(ctx.exec.clone())
        .resolver(Arc::new(ctx.resolver.clone()))
        .allow_net("127.0.0.1/32".parse().unwrap())
        .root_certificates(ctx.ca.root_store())
        .build()
}

/// Every stored key secret, raw.
async fn stored_secrets(ctx: &Ctx) -> Vec<(String, String)> {
    let rows = ctx
        .exec
        .query(
            "SELECT id, secret FROM webhooks_dispatch_endpoint_keys ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| (r.text(0).unwrap(), r.text(1).unwrap()))
        .collect()
}

async fn invariant7_a_database_copied_without_its_key_yields_no_secret(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let (ep, secret) = hmac_endpoint(&ctx, &d).await;
    let forms = SecretForms::of(&secret);
    for (_, stored) in stored_secrets(&ctx).await {
        assert!(stored.starts_with("wdenc1."), "sealed at rest");
        forms.assert_absent("the stored key", stored.as_bytes());
    }
    // The same database under another ring (same key id, other key bytes), and under none: no secret comes
    // out, no request is sent, and the attempt is recorded as refused.
    let stranger = Arc::new(KeyRing::new(MasterKey::generate("test").unwrap()));
    for d in [
        ctx.builder().secret_cipher(stranger).build(),
        without_cipher(&ctx),
    ] {
        let sent = d.dispatch(NewMessage::new(&ep, "a", 1)).await.unwrap();
        let report = d.deliver_due(DeliverDue::default()).await.unwrap();
        assert_eq!(report.attempted, 1);
        let attempts = d.list_attempts(&sent.message_id).await.unwrap();
        let error = attempts[0].error.as_deref().unwrap_or_default();
        assert!(error.ends_with("endpoint secret unusable"), "{attempts:?}");
    }
    assert_eq!(ctx.receiver.count(), 0, "nothing was sent without the key");
    // With its key, the same rows deliver.
    let got = deliver_one(&ctx, &ctx.dispatcher(), &ep).await;
    assert!(independently_signed_by(&secret, &got));
}

async fn invariant7_rekey_seals_plaintext_rows_and_moves_every_key_to_a_new_master_key(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    // Rows written without a cipher (as by a release before encryption at rest) are plaintext.
    let plain = without_cipher(&ctx);
    let mut endpoints = Vec::new();
    for _ in 0..5 {
        endpoints.push(ctx.endpoint(&plain).await);
    }
    assert!(stored_secrets(&ctx)
        .await
        .iter()
        .all(|(_, s)| s.starts_with("whsec_")));
    assert_eq!(plain.rekey(None).await.unwrap_err().code(), "invalid_input");

    // The first ring seals them (in batches of 2, so the scan resumes from a cursor), and a second run finds
    // nothing to do.
    let first = ctx.dispatcher();
    let report = first.rekey(Some(2)).await.unwrap();
    assert_eq!((report.examined, report.resealed, report.raced), (5, 5, 0));
    assert_eq!(first.rekey(Some(2)).await.unwrap().examined, 0);
    for (_, stored) in stored_secrets(&ctx).await {
        assert!(ctx.ring.is_current(&stored));
    }

    // A new master key: every process first learns it (decrypt only), then makes it current, then rekeys.
    let old_key = MasterKey::parse(&ctx.master_key).unwrap();
    let new_key = MasterKey::generate("next").unwrap();
    let both = Arc::new(KeyRing::new(new_key.clone()).with_key(old_key).unwrap());
    let moved = ctx.builder().secret_cipher(both.clone()).build();
    // Before the rekey, rows under the old key still deliver through the new ring.
    let got = deliver_one(&ctx, &moved, &endpoints[0].0).await;
    assert!(independently_signed_by(&endpoints[0].1, &got));
    assert_eq!(moved.rekey(None).await.unwrap().resealed, 5);
    let only_new = Arc::new(KeyRing::new(new_key));
    for (_, stored) in stored_secrets(&ctx).await {
        assert!(only_new.is_current(&stored) && !ctx.ring.is_current(&stored));
    }
    // The old master key can now go: a ring without it delivers to every endpoint.
    let d = ctx.builder().secret_cipher(only_new).build();
    for (ep, secret) in &endpoints {
        let got = deliver_one(&ctx, &d, ep).await;
        assert!(independently_signed_by(secret, &got));
    }
    // A ring that lacks the master key opens nothing: every key is counted and left as it is.
    let stranger = Arc::new(KeyRing::new(MasterKey::generate("other").unwrap()));
    let before = stored_secrets(&ctx).await;
    let report = ctx
        .builder()
        .secret_cipher(stranger)
        .build()
        .rekey(None)
        .await
        .unwrap();
    assert_eq!((report.examined, report.resealed, report.unopened), (5, 0, 5));
    assert_eq!(stored_secrets(&ctx).await, before);
    // A row changed between the scan and the write is left to its writer: the write is compare-and-set.
    let (id, stored) = stored_secrets(&ctx).await.remove(0);
    let params = [
        Value::from(vec![id.clone()]),
        Value::from(vec![format!("{stored}x")]),
        Value::from(vec!["replaced".to_owned()]),
    ];
    let updated = ctx
        .exec
        .query(ctx.exec.statements().update_key_secrets, &params)
        .await
        .unwrap();
    assert!(updated.is_empty());
    assert_eq!(stored_secrets(&ctx).await[0], (id, stored));
}
