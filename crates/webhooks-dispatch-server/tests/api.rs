//! The HTTP API against a live server: the main path end to end, then authentication, errors and limits.

use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use serde_json::json;
use webhooks_dispatch::ssrf::StaticResolver;
use webhooks_dispatch::{verify, EndpointSecret};
use webhooks_dispatch_server::api::routes;
use webhooks_dispatch_server::config::{ApiKeys, EndpointResolver};

use crate::engines;
use crate::support::{authorize, build, get, send, set_header, Engine, TestServer, API_KEY};

engines!(
    register_send_deliver_and_read_attempts,
    every_v1_route_requires_a_valid_key,
    insecure_mode_serves_v1_without_a_key,
    malformed_json_is_400_invalid_json,
    oversized_body_is_413,
    default_body_limit_is_exactly_1_mib,
    unknown_ids_are_404,
    idempotent_replay_is_200_with_the_same_id,
    batch_is_all_or_nothing,
    library_validation_errors_keep_their_codes,
    destination_refusals_give_callers_one_answer_whatever_the_name_resolves_to,
);

async fn register_send_deliver_and_read_attempts(engine: Engine) {
    let server = TestServer::start(engine).await;
    let created = server
        .call(
            Method::POST,
            "/v1/endpoints",
            Some(json!({"owner_id": "acme", "url": server.fixture.receiver_url(),
                        "event_types": ["invoice.paid", "invoice.paid", "a.first"]})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json();
    let id = created["id"].as_str().unwrap();
    let secret = created["secret"].as_str().unwrap();
    assert!(id.starts_with("ep_") && secret.starts_with("whsec_"), "{created}");
    assert_eq!(
        created["event_types"],
        json!(["a.first", "invoice.paid"]),
        "normalized"
    );

    let shown = server
        .call(Method::GET, &format!("/v1/endpoints/{id}"), None)
        .await;
    assert_eq!(shown.status, 200);
    assert!(
        shown.json().get("secret").is_none(),
        "the secret is shown only once"
    );
    assert!(!shown.text().contains(secret));

    // Sent byte for byte: spacing and key order survive.
    let payload = r#"{"z": 1, "a": [true, null]}"#;
    let body = format!(r#"{{"endpoint_id": "{id}", "event_type": "invoice.paid", "payload": {payload}}}"#);
    let mut req = build(Method::POST, "/v1/messages", Some(body));
    authorize(&mut req, API_KEY);
    let sent = send(server.addr, req).await;
    assert_eq!(sent.status, 201, "{}", sent.text());
    let message_id = sent.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(sent.json()["created"], true);

    let receiver = &server.fixture.receiver;
    assert!(receiver.wait_for(1, Duration::from_secs(30)).await, "delivered");
    let got = &receiver.received()[0];
    assert_eq!(got.body, payload.as_bytes());
    let secret = EndpointSecret::parse(secret).unwrap();
    verify(&secret, |name| got.headers.get(name)?.to_str().ok(), &got.body).expect("valid signature");
    assert_eq!(got.headers["webhook-id"], message_id.as_str());

    let message = server.wait_for_state(&message_id, "delivered").await;
    assert_eq!(message["attempts"], 1);
    assert_eq!(message["endpoint_id"], id);
    let attempts = server
        .call(Method::GET, &format!("/v1/messages/{message_id}/attempts"), None)
        .await;
    assert_eq!(attempts.status, 200);
    let attempts = attempts.json()["attempts"].clone();
    assert_eq!(attempts.as_array().unwrap().len(), 1, "{attempts}");
    assert_eq!(attempts[0]["outcome"], "delivered");
    assert_eq!(attempts[0]["status_code"], 200);
    assert_eq!(attempts[0]["attempt_no"], 1);
    server.stop().await;
}

async fn every_v1_route_requires_a_valid_key(engine: Engine) {
    let server = TestServer::start(engine).await;
    for route in routes() {
        let path = route.path.replace("{id}", "msg_x").replace("{owner_id}", "acme");
        let body = (route.method == Method::POST).then(|| "{}".to_owned());
        for key in [None, Some("wrong-key-0123456789abcdef"), Some("")] {
            let mut req = build(route.method.clone(), &path, body.clone());
            if let Some(key) = key {
                authorize(&mut req, key);
            }
            let reply = send(server.addr, req).await;
            if route.protected {
                assert_eq!(reply.status, 401, "{} {path} with {key:?}", route.method);
                assert_eq!(reply.code(), "unauthorized");
                assert_eq!(reply.headers["www-authenticate"], "Bearer");
            } else {
                assert_ne!(reply.status, 401, "{} {path} is open", route.method);
            }
        }
    }
    // The right key in another scheme is still refused; in the right scheme, accepted.
    let mut basic = get("/v1/messages/msg_x");
    set_header(&mut basic, "authorization", &format!("Basic {API_KEY}"));
    assert_eq!(send(server.addr, basic).await.status, 401);
    let reply = server.call(Method::GET, "/v1/messages/msg_x", None).await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    server.stop().await;
}

async fn insecure_mode_serves_v1_without_a_key(engine: Engine) {
    let server = TestServer::start_with(engine, |c| {
        c.api_keys = ApiKeys::default();
        c.insecure_no_auth = true;
    })
    .await;
    let reply = send(server.addr, get("/v1/messages/msg_x")).await;
    assert_eq!((reply.status, reply.code()), (404, "unknown_message".to_owned()));
    server.stop().await;
}

async fn malformed_json_is_400_invalid_json(engine: Engine) {
    let server = TestServer::start(engine).await;
    let cases = [
        ("/v1/endpoints", "{not json"),
        ("/v1/endpoints", r#"{"owner_id": "acme"}"#),
        (
            "/v1/endpoints",
            r#"{"owner_id": "a", "url": "https://x.example", "extra": 1}"#,
        ),
        ("/v1/messages", r#"{"endpoint_id": "ep_1", "event_type": "a"}"#),
        (
            "/v1/messages",
            r#"{"endpoint_id": 5, "event_type": "a", "payload": 1}"#,
        ),
        ("/v1/messages/batch", r#"{"messages": {}}"#),
    ];
    for (path, body) in cases {
        let mut req = build(Method::POST, path, Some(body.to_owned()));
        authorize(&mut req, API_KEY);
        let reply = send(server.addr, req).await;
        assert_eq!(reply.status, 400, "{path} {body}: {}", reply.text());
        assert_eq!(reply.code(), "invalid_json", "{path} {body}");
    }
    let mut no_type = build(Method::POST, "/v1/messages", Some("{}".to_owned()));
    no_type.headers_mut().remove("content-type");
    authorize(&mut no_type, API_KEY);
    let reply = send(server.addr, no_type).await;
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (415, "unsupported_media_type")
    );
    server.stop().await;
}

async fn oversized_body_is_413(engine: Engine) {
    let server = TestServer::start_with(engine, |c| c.body_limit = 1024).await;
    let (endpoint, _) = server.endpoint().await;
    let big = json!({"endpoint_id": endpoint, "event_type": "a", "payload": "x".repeat(4096)});
    let reply = server.call(Method::POST, "/v1/messages", Some(big)).await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(reply.code(), "body_too_large");
    let small = json!({"endpoint_id": endpoint, "event_type": "a", "payload": "x"});
    assert_eq!(
        server
            .call(Method::POST, "/v1/messages", Some(small))
            .await
            .status,
        201
    );
    server.stop().await;
}

/// A batch whose JSON text is exactly `len` bytes: six messages (each payload within the library's 256 KiB),
/// padded evenly.
fn batch_of_exactly(endpoint: &str, len: usize) -> serde_json::Value {
    let batch = |pad: usize| {
        let messages: Vec<_> = (0..6)
            .map(|i| {
                let n = pad / 6 + usize::from(i < pad % 6);
                json!({"endpoint_id": endpoint, "event_type": "a", "payload": "x".repeat(n)})
            })
            .collect();
        json!({ "messages": messages })
    };
    let bare = batch(0).to_string().len();
    let padded = batch(len - bare);
    assert_eq!(padded.to_string().len(), len);
    padded
}

/// With no `body_limit` configured, a request body of exactly 1 MiB is accepted and one byte more is 413.
async fn default_body_limit_is_exactly_1_mib(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (endpoint, _) = server.endpoint().await;
    const MIB: usize = 1024 * 1024;
    let reply = server
        .call(
            Method::POST,
            "/v1/messages/batch",
            Some(batch_of_exactly(&endpoint, MIB)),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let reply = server
        .call(
            Method::POST,
            "/v1/messages/batch",
            Some(batch_of_exactly(&endpoint, MIB + 1)),
        )
        .await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(reply.code(), "body_too_large");
    server.stop().await;
}

async fn unknown_ids_are_404(engine: Engine) {
    let server = TestServer::start(engine).await;
    let cases = [
        (Method::GET, "/v1/messages/msg_nope", None, "unknown_message"),
        (
            Method::GET,
            "/v1/messages/msg_nope/attempts",
            None,
            "unknown_message",
        ),
        (Method::GET, "/v1/endpoints/ep_nope", None, "unknown_endpoint"),
        (
            Method::POST,
            "/v1/messages",
            Some(json!({"endpoint_id": "ep_nope", "event_type": "a", "payload": {}})),
            "unknown_endpoint",
        ),
        (Method::GET, "/v1/nothing-here", None, "not_found"),
    ];
    for (method, path, body, code) in cases {
        let reply = server.call(method, path, body).await;
        assert_eq!((reply.status, reply.code()), (404, code.to_owned()), "{path}");
    }
    // A path id that is not UTF-8 is a JSON 400 like every other error.
    let reply = server.call(Method::GET, "/v1/messages/%FF", None).await;
    assert_eq!((reply.status, reply.code()), (400, "invalid_input".to_owned()));
    let reply = server.call(Method::DELETE, "/v1/messages/msg_nope", None).await;
    assert_eq!(
        (reply.status, reply.code()),
        (405, "method_not_allowed".to_owned())
    );
    server.stop().await;
}

async fn idempotent_replay_is_200_with_the_same_id(engine: Engine) {
    let server = TestServer::start_with(engine, |c| c.worker = false).await;
    let (endpoint, _) = server.endpoint().await;
    let body = format!(r#"{{"endpoint_id": "{endpoint}", "event_type": "a", "payload": {{"n": 1}}}}"#);
    let mut ids = Vec::new();
    for expected in [201, 200, 200] {
        let mut req = build(Method::POST, "/v1/messages", Some(body.clone()));
        authorize(&mut req, API_KEY);
        set_header(&mut req, "idempotency-key", "order-7-paid");
        let reply = send(server.addr, req).await;
        assert_eq!(reply.status, expected, "{}", reply.text());
        assert_eq!(reply.json()["created"], expected == 201);
        ids.push(reply.json()["id"].clone());
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    // The same key with a different body is a conflict, not a replay.
    let changed = body.replace(r#""n": 1"#, r#""n": 2"#);
    let mut req = build(Method::POST, "/v1/messages", Some(changed));
    authorize(&mut req, API_KEY);
    set_header(&mut req, "idempotency-key", "order-7-paid");
    let reply = send(server.addr, req).await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "idempotency_conflict");
    // Without the key, every call is a new message.
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let other = server.call(Method::POST, "/v1/messages", Some(json)).await;
    assert_eq!(other.status, 201);
    assert_ne!(other.json()["id"], ids[0]);
    server.stop().await;
}

async fn batch_is_all_or_nothing(engine: Engine) {
    let server = TestServer::start_with(engine, |c| c.worker = false).await;
    let (endpoint, _) = server.endpoint().await;
    let item = |key: &str, ep: &str| json!({"endpoint_id": ep, "event_type": "a", "payload": [1], "idempotency_key": key});

    let refused = json!({"messages": [item("k1", &endpoint), item("k2", "ep_nope")]});
    let reply = server
        .call(Method::POST, "/v1/messages/batch", Some(refused))
        .await;
    assert_eq!((reply.status, reply.code()), (404, "unknown_endpoint".to_owned()));
    assert_eq!(reply.json()["error"]["index"], 1);

    // k1 was not stored by the refused batch: now it is created.
    let ok = json!({"messages": [item("k1", &endpoint), item("k3", &endpoint)]});
    let reply = server
        .call(Method::POST, "/v1/messages/batch", Some(ok.clone()))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let first = reply.json()["messages"].clone();
    assert_eq!(first.as_array().unwrap().len(), 2);
    assert!(first.as_array().unwrap().iter().all(|m| m["created"] == true));

    let replay = server.call(Method::POST, "/v1/messages/batch", Some(ok)).await;
    assert_eq!(replay.status, 200);
    let again = replay.json()["messages"].clone();
    assert_eq!(again[0]["id"], first[0]["id"]);
    assert_eq!(again[1]["created"], false);

    let too_many = json!({"messages": vec![item("k", &endpoint); 1001]});
    let reply = server
        .call(Method::POST, "/v1/messages/batch", Some(too_many))
        .await;
    assert_eq!((reply.status, reply.code()), (400, "invalid_input".to_owned()));
    server.stop().await;
}

async fn library_validation_errors_keep_their_codes(engine: Engine) {
    let server = TestServer::start_with(engine, |c| c.worker = false).await;
    let register = |url: &str| json!({"owner_id": "acme", "url": url});
    // Refused before any packet is sent: plain http, and private addresses outside the allowlist
    // (127.0.0.2 is loopback but not in 127.0.0.1/32).
    for url in [
        "http://127.0.0.1/hook",
        "https://10.0.0.1/hook",
        "https://127.0.0.2/hook",
    ] {
        let reply = server
            .call(Method::POST, "/v1/endpoints", Some(register(url)))
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "invalid_url".to_owned()),
            "{url}"
        );
    }
    let body = json!({"owner_id": "acme", "url": server.fixture.receiver_url(), "event_types": ["a"]});
    let reply = server.call(Method::POST, "/v1/endpoints", Some(body)).await;
    let endpoint = reply.json()["id"].as_str().unwrap().to_owned();
    let wrong_type = json!({"endpoint_id": endpoint, "event_type": "b", "payload": 1});
    let reply = server.call(Method::POST, "/v1/messages", Some(wrong_type)).await;
    assert_eq!(
        (reply.status, reply.code()),
        (400, "event_type_not_subscribed".to_owned())
    );
    let blank = json!({"endpoint_id": endpoint, "event_type": " ", "payload": 1});
    let reply = server.call(Method::POST, "/v1/messages", Some(blank)).await;
    assert_eq!((reply.status, reply.code()), (400, "invalid_input".to_owned()));
    server.stop().await;
}

// Catches: the API telling a caller where an internal name points — a loopback or private answer, a name
// that does not resolve and an IP literal answered with different texts, so that registering URLs maps the
// internal DNS — on registration and on update alike; and syntax refusals losing their specific texts.
async fn destination_refusals_give_callers_one_answer_whatever_the_name_resolves_to(engine: Engine) {
    let resolver = StaticResolver::new();
    // 127.0.0.2 is loopback outside the test allowlist (127.0.0.1/32); ghost.internal resolves to nothing.
    resolver.insert("billing.internal", vec!["127.0.0.2".parse().unwrap()]);
    resolver.insert("vault.internal", vec!["10.0.0.7".parse().unwrap()]);
    let server = TestServer::start_with(engine, move |c| {
        c.worker = false;
        c.resolver = Some(EndpointResolver(Arc::new(resolver)));
    })
    .await;
    let (id, _) = server.endpoint().await;
    let path = format!("/v1/endpoints/{id}");
    let hosts = [
        "billing.internal",
        "ghost.internal",
        "vault.internal",
        "127.0.0.2",
    ];
    let mut answers = Vec::new();
    for host in hosts {
        let url = format!("https://{host}/hook");
        let created = server
            .call(
                Method::POST,
                "/v1/endpoints",
                Some(json!({"owner_id": "acme", "url": url})),
            )
            .await;
        let updated = server.call(Method::PATCH, &path, Some(json!({"url": url}))).await;
        for reply in [created, updated] {
            assert_eq!(
                (reply.status, reply.code()),
                (400, "invalid_url".to_owned()),
                "{host}"
            );
            answers.push((host, reply.body));
        }
    }
    let (first_host, first) = &answers[0];
    for (host, body) in &answers {
        assert_eq!(
            body,
            first,
            "{host} and {first_host} are answered differently: {} vs {}",
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(first)
        );
    }
    let message: serde_json::Value = serde_json::from_slice(first).unwrap();
    assert_eq!(
        message["error"]["message"],
        "destination refused: the URL must resolve to a public address"
    );
    // A URL's shape is the caller's own business: those refusals keep saying what is wrong.
    for (url, says) in [
        ("http://billing.internal/hook", "https"),
        ("https://user:pw@billing.internal/hook", "credentials"),
    ] {
        let reply = server.call(Method::PATCH, &path, Some(json!({"url": url}))).await;
        assert_eq!(reply.code(), "invalid_url", "{url}");
        assert!(reply.text().contains(says), "{url}: {}", reply.text());
    }
    server.stop().await;
}
