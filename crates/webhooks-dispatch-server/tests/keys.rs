//! Signing keys over their life through the API: rotation with a grace period (both secrets verify, checked
//! by the independent `standardwebhooks` crate), expiring the previous keys, ed25519 endpoints whose public
//! keys are listed and published in the open key set (checked by `ring`'s ed25519), and the routes' errors.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hyper::Method;
use serde_json::{json, Value};
use webhooks_dispatch::signing::{verify_ed25519, Ed25519PublicKey};
use webhooks_dispatch_testkit::receiver::Received;

use crate::engines;
use crate::support::{eventually, get, send, Engine, TestServer};

engines!(
    hmac_rotation_signs_with_both_secrets_until_the_previous_ones_are_expired,
    ed25519_endpoint_is_published_in_the_open_key_set_and_its_deliveries_verify_independently,
    key_routes_refuse_bad_input_with_the_api_errors,
);

/// Enqueues one message to `endpoint` and returns its delivery, found by message id (retries of other
/// messages may arrive around it).
async fn deliver(server: &TestServer, endpoint: &str, n: u32) -> Received {
    let body = json!({"endpoint_id": endpoint, "event_type": "invoice.paid", "payload": {"n": n}});
    let sent = server.call(Method::POST, "/v1/messages", Some(body)).await;
    assert_eq!(sent.status, 201, "{}", sent.text());
    let id = sent.json()["id"].as_str().unwrap().to_owned();
    eventually("the message is delivered", Duration::from_secs(30), || async {
        let received = server.fixture.receiver.received();
        received
            .into_iter()
            .find(|r| r.headers["webhook-id"] == id.as_str())
    })
    .await
}

/// Whether the independent `standardwebhooks` crate accepts the delivery under `secret`.
fn standard_webhooks_accepts(secret: &str, got: &Received) -> bool {
    let webhook = standardwebhooks::Webhook::new(secret).expect("a whsec_ secret");
    webhook.verify(&got.body, &got.headers).is_ok()
}

fn signature_count(got: &Received) -> usize {
    got.headers["webhook-signature"]
        .to_str()
        .unwrap()
        .split(' ')
        .count()
}

async fn keys_of(server: &TestServer, endpoint: &str, list: &str) -> Vec<Value> {
    let reply = server
        .call(Method::GET, &format!("/v1/endpoints/{endpoint}/{list}"), None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["data"].as_array().unwrap().clone()
}

// Catches: a rotation that stops the old secret at once (receivers not yet moved fail), one whose old secret
// never stops, a header the standard verifier rejects, a secret in the key listing, or expire-previous-
// secrets not taking effect on the next delivery.
async fn hmac_rotation_signs_with_both_secrets_until_the_previous_ones_are_expired(engine: Engine) {
    let server = TestServer::start(engine).await;
    let register = json!({"owner_id": "acme", "url": server.fixture.receiver_url()});
    let created = server.call(Method::POST, "/v1/endpoints", Some(register)).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json();
    let (endpoint, old) = (
        created["id"].as_str().unwrap(),
        created["secret"].as_str().unwrap(),
    );
    assert_eq!(created["key"]["algorithm"], "hmac-sha256", "{created}");
    assert_eq!(created["key"]["public_key"], Value::Null, "{created}");

    let path = format!("/v1/endpoints/{endpoint}/rotate-secret");
    let rotated = server
        .call(Method::POST, &path, Some(json!({"grace": "24h"})))
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let rotated = rotated.json();
    let new = rotated["secret"].as_str().unwrap();
    assert!(new.starts_with("whsec_") && new != old, "{rotated}");
    assert_eq!(
        rotated["key"]["not_after"],
        Value::Null,
        "the current key has no end"
    );
    let keys = keys_of(&server, endpoint, "keys").await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0]["id"], rotated["key"]["id"], "newest first");
    assert_eq!(keys[1]["id"], created["key"]["id"]);
    assert!(
        keys[1]["not_after"].is_string(),
        "the previous key ends: {keys:?}"
    );
    let listing = format!("{keys:?}");
    assert!(!listing.contains(new) && !listing.contains(old), "{listing}");
    assert!(keys_of(&server, endpoint, "public-keys").await.is_empty());

    let during = deliver(&server, endpoint, 1).await;
    assert_eq!(signature_count(&during), 2, "{:?}", during.headers);
    assert!(standard_webhooks_accepts(old, &during), "the old secret verifies");
    assert!(standard_webhooks_accepts(new, &during), "the new secret verifies");

    let path = format!("/v1/endpoints/{endpoint}/expire-previous-secrets");
    let expired = server.call(Method::POST, &path, None).await;
    assert_eq!(expired.status, 200, "{}", expired.text());
    assert_eq!(expired.json(), json!({"expired": 1}));
    assert_eq!(keys_of(&server, endpoint, "keys").await.len(), 1);

    let after = deliver(&server, endpoint, 2).await;
    assert_eq!(signature_count(&after), 1, "{:?}", after.headers);
    assert!(standard_webhooks_accepts(new, &after));
    assert!(
        !standard_webhooks_accepts(old, &after),
        "the old secret no longer verifies"
    );
    server.stop().await;
}

/// Whether `ring`'s ed25519, which shares no code with the signer, accepts one `v1a` entry of the delivery.
fn ring_accepts(public_key: &str, got: &Received, body: &[u8]) -> bool {
    let raw = BASE64
        .decode(public_key.strip_prefix("whpk_").expect("a whpk_ key"))
        .unwrap();
    let header = |name: &str| got.headers[name].to_str().unwrap().to_owned();
    let signed = format!("{}.{}.", header("webhook-id"), header("webhook-timestamp"));
    let signed = [signed.as_bytes(), body].concat();
    let verifier = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, raw);
    header("webhook-signature").split(' ').any(|entry| {
        entry
            .strip_prefix("v1a,")
            .and_then(|sig| BASE64.decode(sig).ok())
            .is_some_and(|sig| verifier.verify(&signed, &sig).is_ok())
    })
}

// Catches: an ed25519 endpoint whose registration hands out a secret, a public key missing from the
// endpoint's listing or from the key set, a key set behind the API key (receivers have none) or without
// its cache lifetime, and `v1a` signatures that only the service's own verifier accepts.
async fn ed25519_endpoint_is_published_in_the_open_key_set_and_its_deliveries_verify_independently(
    engine: Engine,
) {
    let server = TestServer::start(engine).await;
    let register =
        json!({"owner_id": "acme-ed", "url": server.fixture.receiver_url(), "signature": "ed25519"});
    let created = server.call(Method::POST, "/v1/endpoints", Some(register)).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json();
    assert!(
        created.get("secret").is_none(),
        "no secret for ed25519: {created}"
    );
    assert_eq!(created["key"]["algorithm"], "ed25519");
    let endpoint = created["id"].as_str().unwrap();
    let public_key = created["key"]["public_key"].as_str().unwrap();
    assert!(public_key.starts_with("whpk_"), "{created}");

    let published = keys_of(&server, endpoint, "public-keys").await;
    assert_eq!(published.len(), 1);
    assert_eq!(published[0]["public_key"], public_key);
    // Without any Authorization header.
    let set = send(server.addr, get("/v1/owners/acme-ed/key-set")).await;
    assert_eq!(set.status, 200, "{}", set.text());
    assert_eq!(set.headers["cache-control"], "public, max-age=300");
    let set = set.json();
    assert_eq!(set["owner_id"], "acme-ed");
    assert_eq!(set["keys"].as_array().unwrap().len(), 1, "{set}");
    assert_eq!(set["keys"][0]["endpoint_id"], endpoint);
    assert_eq!(set["keys"][0]["public_key"], public_key);
    assert_eq!(set["keys"][0]["id"], created["key"]["id"]);
    let nobody = send(server.addr, get("/v1/owners/nobody/key-set")).await.json();
    assert_eq!(nobody["keys"], json!([]));

    let got = deliver(&server, endpoint, 1).await;
    let key = Ed25519PublicKey::parse(public_key).unwrap();
    let header = |name: &str| got.headers.get(name)?.to_str().ok();
    verify_ed25519(&key, header, &got.body).expect("verify_ed25519 accepts the delivery");
    assert!(ring_accepts(public_key, &got, &got.body), "ring accepts it");
    assert!(
        !ring_accepts(public_key, &got, b"{\"n\":2}"),
        "not a tampered body"
    );
    assert!(verify_ed25519(&key, header, b"{\"n\":2}").is_err());

    // A rotation keeps the scheme: no secret again, and both public keys are published meanwhile.
    let path = format!("/v1/endpoints/{endpoint}/rotate-secret");
    let rotated = server.call(Method::POST, &path, Some(json!({}))).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let rotated = rotated.json();
    assert!(rotated.get("secret").is_none(), "{rotated}");
    assert_eq!(rotated["key"]["algorithm"], "ed25519");
    let set = send(server.addr, get("/v1/owners/acme-ed/key-set")).await.json();
    assert_eq!(set["keys"].as_array().unwrap().len(), 2, "{set}");
    assert_eq!(set["keys"][0]["public_key"], rotated["key"]["public_key"]);
    server.stop().await;
}

// Catches: bad input to the key routes answered with a 500 or a plain-text error, an unknown field silently
// ignored, a grace period beyond the library's limit accepted, or an unknown endpoint not being a 404.
async fn key_routes_refuse_bad_input_with_the_api_errors(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (endpoint, _) = server.endpoint().await;
    let rotate = format!("/v1/endpoints/{endpoint}/rotate-secret");
    let cases = [
        (rotate.as_str(), json!({"grace": "8d"}), 400, "invalid_input"),
        (rotate.as_str(), json!({"grace": "soon"}), 400, "invalid_input"),
        (rotate.as_str(), json!({"signature": "rsa"}), 400, "invalid_input"),
        (
            rotate.as_str(),
            json!({"secret": "whsec_!!"}),
            400,
            "invalid_input",
        ),
        (
            rotate.as_str(),
            json!({"secret": "whpk_AAAA"}),
            400,
            "invalid_input",
        ),
        (rotate.as_str(), json!({"bogus": 1}), 400, "invalid_json"),
        (
            "/v1/endpoints/ep_nope/rotate-secret",
            json!({}),
            404,
            "unknown_endpoint",
        ),
        (
            "/v1/endpoints",
            json!({"owner_id": "acme", "url": server.fixture.receiver_url(), "signature": "rsa"}),
            400,
            "invalid_input",
        ),
    ];
    for (path, body, status, code) in cases {
        let reply = server.call(Method::POST, path, Some(body.clone())).await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code.to_owned()),
            "{path} {body}"
        );
    }
    let expire = server
        .call(
            Method::POST,
            "/v1/endpoints/ep_nope/expire-previous-secrets",
            None,
        )
        .await;
    assert_eq!(
        (expire.status, expire.code()),
        (404, "unknown_endpoint".to_owned())
    );
    for list in ["keys", "public-keys"] {
        let reply = server
            .call(Method::GET, &format!("/v1/endpoints/ep_nope/{list}"), None)
            .await;
        assert_eq!(reply.status, 404, "{list}: {}", reply.text());
    }
    // A secret of one's own, with a grace of zero: the previous key ends at once.
    let own = webhooks_dispatch::EndpointSecret::generate();
    let body = json!({"secret": own.expose(), "grace": "0s"});
    let reply = server.call(Method::POST, &rotate, Some(body)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["secret"], own.expose());
    assert_eq!(keys_of(&server, &endpoint, "keys").await.len(), 1);
    server.stop().await;
}
