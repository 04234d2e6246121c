//! Invariant 7 on the service: an endpoint's secret is shown once, in the registration (or rotation)
//! response, and never again — not in another response, not in a log line even at trace level, not in any
//! stored row, where it is sealed under the master key. Nor does the master key appear anywhere: not in a
//! log line, a response, a row, an error or the configuration's `Debug`.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request};
use serde_json::{json, Value};
use webhooks_dispatch_testkit::receiver::Reply;
use webhooks_dispatch_testkit::SecretForms;

use crate::db;
use crate::engines;
use crate::process::{run, service_command, Service, BIN};
use crate::support::{
    authorize, bounded, build, call, eventually, master_key_text, send, set_header, Engine, Fixture, API_KEY,
};

engines!(invariant7_endpoint_secret_is_in_no_response_log_line_or_row_but_its_own);

/// Every form of every master key of the ring the service runs with: the fixture's (PostgreSQL), or the
/// entries of the default key file beside the SQLite database.
fn master_key_forms(fixture: &Fixture) -> Vec<SecretForms> {
    let text = match &fixture.master_keys {
        Some(ring) => ring.clone(),
        None => std::fs::read_to_string(fixture.scratch.path().join("webhooks-dispatch.db.keys"))
            .expect("the default key file"),
    };
    let entries: Vec<SecretForms> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(SecretForms::of)
        .collect();
    assert!(!entries.is_empty(), "no master key in {text:?}");
    entries
}

/// A client that keeps every response body it received, so the test can check all of them at the end.
struct Recorded {
    addr: SocketAddr,
    bodies: RefCell<Vec<(String, Bytes)>>,
}

impl Recorded {
    /// Sends `req` as is (keyed or not) and records the response under `label`.
    async fn send(&self, label: String, req: Request<Full<Bytes>>) -> crate::support::Reply {
        let reply = send(self.addr, req).await;
        self.bodies.borrow_mut().push((label, reply.body.clone()));
        reply
    }

    /// A keyed request with an optional JSON body.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> crate::support::Reply {
        let mut req = build(method.clone(), path, body.map(|b| b.to_string()));
        authorize(&mut req, API_KEY);
        self.send(format!("{method} {path}"), req).await
    }

    /// A keyed request whose status must be `status`.
    async fn expect(&self, status: u16, method: Method, path: &str, body: Option<Value>) -> Value {
        let reply = self.call(method.clone(), path, body).await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.text());
        reply.json()
    }
}

// Catches: the secret (in any encoding) in a response other than the registration's — GET endpoint,
// messages, attempts, any error —, in a log line at any level (a Debug of a claimed message, a logged
// response from the receiver, a driver's trace of bound parameters), in the attempt log (an error that
// quotes the receiver's answer, which echoes the secret), or in any column but `endpoints.secret`.
async fn invariant7_endpoint_secret_is_in_no_response_log_line_or_row_but_its_own(engine: Engine) {
    let fixture = Fixture::new(engine).await;
    let mut cmd = service_command(&fixture, &["serve"]);
    cmd.env("RUST_LOG", "trace")
        .env("WEBHOOKS_DISPATCH_BODY_LIMIT", "4096");
    let (served, addr) = Service::serve(cmd).await;

    let register = json!({"owner_id": "acme", "url": fixture.receiver_url()});
    let created = call(addr, Method::POST, "/v1/endpoints", Some(register)).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let endpoint = created.json()["id"].as_str().unwrap().to_owned();
    let secret = created.json()["secret"].as_str().unwrap().to_owned();
    let client = Recorded {
        addr,
        bodies: RefCell::new(Vec::new()),
    };

    deliver_each_outcome(&client, &fixture, &endpoint, &secret).await;
    let rotated = rotate_and_deliver(&client, &fixture, &endpoint, &secret).await;
    let mut forms = master_key_forms(&fixture);
    forms.push(SecretForms::of(&secret));
    forms.push(SecretForms::of(&rotated));
    client
        .expect(200, Method::GET, &format!("/v1/endpoints/{endpoint}"), None)
        .await;
    provoke_every_error(&client, &endpoint).await;
    for path in ["/metrics", "/readyz", "/healthz"] {
        client
            .send(format!("GET {path}"), crate::support::get(path))
            .await;
    }

    let (status, _, logs) = served.terminate().await;
    assert!(status.success(), "{status:?}");
    // Otherwise the log check below would prove nothing about trace-level events.
    assert!(logs.contains(r#""level":"TRACE""#), "trace logging is not on");
    let bodies = client.bodies.into_inner();
    assert!(bodies.len() >= 25, "{} responses", bodies.len());
    for forms in &forms {
        forms.assert_absent("the service's logs", logs.as_bytes());
        for (label, body) in &bodies {
            forms.assert_absent(&format!("the response to {label}"), body);
        }
    }
    assert!(!logs.contains(API_KEY), "the API key is in the logs");

    assert_absent_from_the_tables(engine, &fixture.database_url, &forms).await;
}

/// Rotates the endpoint's secret (the response, which must hold the new secret, is not recorded), reads its
/// keys, and has one more message delivered, signed by both; returns the new secret.
async fn rotate_and_deliver(client: &Recorded, fixture: &Fixture, endpoint: &str, old: &str) -> String {
    let path = format!("/v1/endpoints/{endpoint}/rotate-secret");
    let rotated = call(client.addr, Method::POST, &path, Some(json!({"grace": "1h"}))).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let new = rotated.json()["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let keys = client
        .expect(200, Method::GET, &format!("/v1/endpoints/{endpoint}/keys"), None)
        .await;
    assert_eq!(keys["data"].as_array().unwrap().len(), 2, "{keys}");
    let body = json!({"endpoint_id": endpoint, "event_type": "invoice.paid", "payload": {"n": 4}});
    let sent = client.expect(201, Method::POST, "/v1/messages", Some(body)).await;
    let id = sent["id"].as_str().unwrap().to_owned();
    // Found by id: the first message's retry may arrive before or after it.
    let got = eventually(
        "the delivery after the rotation",
        Duration::from_secs(30),
        || async {
            let received = fixture.receiver.received();
            received
                .into_iter()
                .find(|r| r.headers["webhook-id"] == id.as_str())
        },
    )
    .await;
    let signatures = got.headers["webhook-signature"].to_str().unwrap().to_owned();
    assert_eq!(signatures.split(' ').count(), 2, "old and new sign: {signatures}");
    new
}

/// Three deliveries, one at a time: a retryable failure and a permanent one, both answering with the
/// secret in a header and the body (a receiver may well echo what it was configured with), then a success;
/// waits until each outcome is recorded and reads it back.
async fn deliver_each_outcome(client: &Recorded, fixture: &Fixture, endpoint: &str, secret: &str) {
    let echo = |status| Reply::Status {
        status,
        headers: vec![("x-echo".to_owned(), secret.to_owned())],
        body: secret.to_owned().into_bytes(),
    };
    fixture.receiver.push_replies([echo(500), echo(400)]);
    let mut ids = Vec::new();
    for n in 1..=3 {
        let body = json!({"endpoint_id": endpoint, "event_type": "invoice.paid", "payload": {"n": n}});
        let sent = client.expect(201, Method::POST, "/v1/messages", Some(body)).await;
        ids.push(sent["id"].as_str().unwrap().to_owned());
        // One at a time, so the n-th scripted reply answers the n-th message.
        assert!(
            fixture.receiver.wait_for(n, Duration::from_secs(30)).await,
            "delivery {n}"
        );
    }
    let outcomes = [
        ("pending", "retrying", 500),
        ("dead", "dead", 400),
        ("delivered", "delivered", 200),
    ];
    for (id, (state, outcome, status)) in ids.iter().zip(outcomes) {
        let path = format!("/v1/messages/{id}");
        eventually("the attempt is recorded", Duration::from_secs(30), || async {
            let m = client.expect(200, Method::GET, &path, None).await;
            (m["state"] == state && m["attempts"] == 1).then_some(())
        })
        .await;
        let attempts = client
            .expect(200, Method::GET, &format!("{path}/attempts"), None)
            .await;
        let attempt = &attempts["attempts"][0];
        assert_eq!(
            (&attempt["outcome"], &attempt["status_code"]),
            (&json!(outcome), &json!(status))
        );
    }
}

/// Every cell of the four tables is free of every secret and master key; the keys' own column holds them
/// sealed.
async fn assert_absent_from_the_tables(engine: Engine, url: &str, forms: &[SecretForms]) {
    let db = db::open(url).await;
    let cells = db::dump(engine, &*db).await;
    let attempt_rows = cells
        .iter()
        .filter(|(c, _)| c == "webhooks_dispatch_attempts.message_id");
    // Three above, and perhaps the idempotency check's message by now.
    assert!(attempt_rows.count() >= 3, "the dump covers every attempt");
    let sealed = cells
        .iter()
        .filter(|(c, _)| c == "webhooks_dispatch_endpoint_keys.secret")
        .inspect(|(_, text)| assert!(text.starts_with("wdenc1."), "not sealed: {text:.8}…"))
        .count();
    assert_eq!(sealed, 2, "the two keys of the endpoint, sealed");
    for (column, text) in &cells {
        for forms in forms {
            forms.assert_absent(column, text.as_bytes());
        }
    }
}

/// Every kind of error response the API gives: 400, 401, 404, 405, 409, 413 and 415.
async fn provoke_every_error(client: &Recorded, endpoint: &str) {
    let message = |payload: Value| json!({"endpoint_id": endpoint, "event_type": "a", "payload": payload});
    let bad_url = json!({"owner_id": "acme", "url": "http://127.0.0.1/hook"});
    client
        .expect(400, Method::POST, "/v1/endpoints", Some(bad_url))
        .await;
    let blank_type = json!({"endpoint_id": endpoint, "event_type": " ", "payload": 1});
    client
        .expect(400, Method::POST, "/v1/messages", Some(blank_type))
        .await;
    let mut malformed = build(Method::POST, "/v1/messages", Some("{not json".to_owned()));
    authorize(&mut malformed, API_KEY);
    assert_eq!(
        client.send("malformed JSON".to_owned(), malformed).await.status,
        400
    );

    let path = format!("/v1/endpoints/{endpoint}");
    assert_eq!(
        client
            .send("no key".to_owned(), build(Method::GET, &path, None))
            .await
            .status,
        401
    );
    let mut wrong = build(Method::GET, &path, None);
    authorize(&mut wrong, "wrong-key-0123456789abcdef");
    assert_eq!(client.send("wrong key".to_owned(), wrong).await.status, 401);

    for missing in [
        "/v1/endpoints/ep_nope",
        "/v1/messages/msg_nope",
        "/v1/messages/msg_nope/attempts",
        "/v1/nothing",
    ] {
        client.expect(404, Method::GET, missing, None).await;
    }
    let to_nowhere = json!({"endpoint_id": "ep_nope", "event_type": "a", "payload": 1});
    client
        .expect(404, Method::POST, "/v1/messages", Some(to_nowhere))
        .await;
    let batch =
        json!({"messages": [message(json!(1)), {"endpoint_id": "ep_nope", "event_type": "a", "payload": 1}]});
    client
        .expect(404, Method::POST, "/v1/messages/batch", Some(batch))
        .await;
    client.expect(405, Method::PUT, &path, None).await;

    for (payload, status) in [(1, 201), (2, 409)] {
        let mut req = build(
            Method::POST,
            "/v1/messages",
            Some(message(json!(payload)).to_string()),
        );
        authorize(&mut req, API_KEY);
        set_header(&mut req, "idempotency-key", "same-key");
        let reply = client
            .send(format!("idempotency key, payload {payload}"), req)
            .await;
        assert_eq!(reply.status, status, "{}", reply.text());
    }
    let oversized = message(json!("x".repeat(8192)));
    client
        .expect(413, Method::POST, "/v1/messages", Some(oversized))
        .await;
    let mut untyped = build(Method::POST, "/v1/endpoints", Some("{}".to_owned()));
    untyped.headers_mut().remove("content-type");
    authorize(&mut untyped, API_KEY);
    assert_eq!(
        client.send("no content type".to_owned(), untyped).await.status,
        415
    );
}

/// A master key whose base64 decodes to 31 bytes: refused, and still key material not to print.
fn short_key() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 31];
    getrandom::fill(&mut bytes).unwrap();
    format!("bad:{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

// Catches: a master key in the "starting" line (the configuration's Debug, at trace level too), quoted in
// the error for a ring or key file that does not parse, or echoed on stderr by `keys generate` or by the
// refusal of `keys add` (which prints the key to add on stdout, its one place).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant7_master_keys_stay_out_of_errors_logs_and_the_configuration_debug() {
    bounded(
        "secrets::invariant7_master_keys_stay_out_of_errors_logs_and_the_configuration_debug",
        async {
            let dir = tempfile::tempdir().unwrap();
            let port = webhooks_dispatch_testkit::receiver::ClosedPort::bind([127, 0, 0, 1].into()).unwrap();
            let refusing = format!("postgres://app@127.0.0.1:{}/x", port.port());
            let b = webhooks_dispatch::keyring::MasterKey::generate("b").unwrap();
            let (a, b, bad) = (master_key_text(), b.encoded().to_string(), short_key());
            let key_file = dir.path().join("keys");
            std::fs::write(&key_file, format!("{a}\n{bad}\n")).unwrap();
            let key_file = key_file.to_str().unwrap().to_owned();
            let ring = format!("{a},{b}");
            let with_bad = format!("{a},{bad}");
            // Arguments, environment, and what stderr must say.
            type Env<'a> = Vec<(&'a str, &'a str)>;
            let cases: [(&[&str], Env, &str); 5] = [
                (
                    &["serve"],
                    vec![("WEBHOOKS_DISPATCH_MASTER_KEYS", &ring)],
                    "cannot connect",
                ),
                (
                    &["worker"],
                    vec![("WEBHOOKS_DISPATCH_MASTER_KEYS", &with_bad)],
                    "master_keys",
                ),
                (
                    &["migrate"],
                    vec![("WEBHOOKS_DISPATCH_MASTER_KEYS_FILE", &key_file)],
                    &key_file,
                ),
                (
                    &["keys", "add"],
                    vec![("WEBHOOKS_DISPATCH_MASTER_KEYS", &ring)],
                    "master_keys",
                ),
                (&["keys", "generate"], vec![], "A new master key"),
            ];
            let forms: Vec<SecretForms> = [&a, &b, &bad].into_iter().map(|k| SecretForms::of(k)).collect();
            for (args, env, expected) in cases {
                let mut cmd = tokio::process::Command::new(BIN);
                cmd.env_clear()
                    .args(args)
                    .envs(env)
                    .env("WEBHOOKS_DISPATCH_DATABASE_URL", &refusing)
                    .env("WEBHOOKS_DISPATCH_API_KEYS", API_KEY)
                    .env("WEBHOOKS_DISPATCH_LISTEN", "127.0.0.1:0")
                    .env("WEBHOOKS_DISPATCH_LOG_FORMAT", "json")
                    .env("RUST_LOG", "trace")
                    .current_dir(dir.path());
                let out = run(cmd, None).await;
                assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
                if args == ["serve"] {
                    assert!(out.stderr.contains(r#""message":"starting""#), "{}", out.stderr);
                }
                for forms in &forms {
                    forms.assert_absent(&format!("stderr of {args:?}"), out.stderr.as_bytes());
                }
                if args[0] == "keys" {
                    let printed = out.stdout.trim();
                    assert!(printed.contains(':'), "the key is on stdout: {}", out.stdout);
                    SecretForms::of(printed).assert_absent("stderr", out.stderr.as_bytes());
                } else {
                    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", out.stderr);
                }
            }
        },
    )
    .await
}
