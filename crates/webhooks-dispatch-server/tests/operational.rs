//! Operational events: with `operational_owner = "ops"`, lifecycle changes of other owners' endpoints reach
//! the endpoints registered for "ops" as signed webhooks, and nothing is ever reported about "ops"'s own.

use std::time::Duration;

use hyper::Method;
use serde_json::{json, Value};
use webhooks_dispatch::{verify, EndpointSecret};
use webhooks_dispatch_testkit::receiver::{Received, Receiver, ReceiverOptions, Reply};

use crate::support::{bounded, eventually, url_of, Engine, TestServer};
use crate::{db, engines};

engines!(
    disabling_a_customer_endpoint_sends_a_signed_endpoint_disabled_to_the_operators,
    a_dead_customer_message_sends_message_attempt_exhausted_but_a_dead_operator_message_does_not,
);

const OPS: &str = "ops";

/// A server with `operational_owner = "ops"` and one "ops" endpoint on a receiver of its own.
struct Ops {
    server: TestServer,
    receiver: Receiver,
    endpoint_id: String,
    secret: String,
}

async fn start(engine: Engine) -> Ops {
    start_with(engine, true).await
}

/// As [`start`]; without `worker` the API process delivers nothing (and sees no dead message).
async fn start_with(engine: Engine, worker: bool) -> Ops {
    let server = TestServer::start_with(engine, |c| {
        c.operational_owner = Some(OPS.to_owned());
        c.worker = worker;
    })
    .await;
    let receiver = Receiver::start(&server.fixture.ca, ReceiverOptions::default())
        .await
        .expect("ops receiver");
    let (endpoint_id, secret) = register(&server, OPS, &url_of(&receiver)).await;
    Ops {
        server,
        receiver,
        endpoint_id,
        secret,
    }
}

async fn register(server: &TestServer, owner: &str, url: &str) -> (String, String) {
    let body = json!({"owner_id": owner, "url": url});
    let reply = server.call(Method::POST, "/v1/endpoints", Some(body)).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let json = reply.json();
    (
        json["id"].as_str().unwrap().to_owned(),
        json["secret"].as_str().unwrap().to_owned(),
    )
}

async fn disable(server: &TestServer, endpoint_id: &str) {
    let path = format!("/v1/endpoints/{endpoint_id}/disable");
    let reply = server.call(Method::POST, &path, None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

impl Ops {
    /// Waits for the operational webhook of `event_type` whose `data.<field>` is `id`, checks its signature
    /// with the ops endpoint's secret, and returns it with its parsed body.
    async fn wait_for(&self, event_type: &str, field: &str, id: &str) -> (Received, Value) {
        let what = format!("{event_type} about {id} reaches the ops endpoint");
        let (got, body) = eventually(&what, Duration::from_secs(30), || async {
            self.receiver.received().into_iter().find_map(|r| {
                let body: Value = serde_json::from_slice(&r.body).ok()?;
                (body["type"] == event_type && body["data"][field] == id).then_some((r, body))
            })
        })
        .await;
        let secret = EndpointSecret::parse(&self.secret).unwrap();
        verify(&secret, |name| got.headers.get(name)?.to_str().ok(), &got.body).expect("signed for ops");
        let timestamp = body["timestamp"].as_str().expect("a timestamp");
        chrono::DateTime::parse_from_rfc3339(timestamp).expect("RFC 3339");
        (got, body)
    }

    /// Every operational event stored so far, checked against the loop guard: none is about an endpoint
    /// of the operational owner.
    async fn stored_events(&self, ops_endpoints: &[&str]) -> Vec<Value> {
        let db = db::open(&self.server.fixture.database_url).await;
        let events: Vec<Value> = db::events_of(&*db, OPS)
            .await
            .into_iter()
            .map(|(event_type, payload)| {
                let payload: Value = serde_json::from_str(&payload).unwrap();
                assert_eq!(payload["type"], event_type.as_str());
                payload
            })
            .collect();
        for event in &events {
            assert_ne!(
                event["data"]["owner_id"], OPS,
                "about the operator itself: {event}"
            );
            let endpoint = event["data"]["endpoint_id"].as_str().unwrap();
            assert!(
                !ops_endpoints.contains(&endpoint),
                "about an ops endpoint: {event}"
            );
        }
        events
    }
}

async fn disabling_a_customer_endpoint_sends_a_signed_endpoint_disabled_to_the_operators(engine: Engine) {
    let ops = start(engine).await;
    let server = &ops.server;
    let (customer, _) = server.endpoint().await;
    let other_ops_url = format!("https://127.0.0.1:{}/other", ops.receiver.port());
    let (ops_b, _) = register(server, OPS, &other_ops_url).await;

    // Disabled before the customer's endpoint: events are dispatched in order, so once the customer's
    // arrives, an event about this one would have been stored already.
    disable(server, &ops_b).await;
    disable(server, &customer).await;
    let (got, body) = ops.wait_for("endpoint.disabled", "endpoint_id", &customer).await;
    assert_eq!(got.path, "/hook");
    assert_eq!(
        body["data"],
        json!({"endpoint_id": customer, "owner_id": "acme", "reason": "manual"})
    );
    let (_, created) = ops.wait_for("endpoint.created", "endpoint_id", &customer).await;
    assert_eq!(created["data"]["owner_id"], "acme");

    let events = ops.stored_events(&[&ops.endpoint_id, &ops_b]).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.len(), 2, "created and disabled, once each: {events:?}");
    assert!(types.contains(&"endpoint.created") && types.contains(&"endpoint.disabled"));
    ops.server.stop().await;
}

async fn a_dead_customer_message_sends_message_attempt_exhausted_but_a_dead_operator_message_does_not(
    engine: Engine,
) {
    let ops = start(engine).await;
    let server = &ops.server;
    // 400 is permanent: one attempt and the message is dead.
    server.fixture.receiver.set_default_reply(Reply::status(400));
    let (customer, _) = server.endpoint().await;
    // An operator endpoint that fails the same way: its own dead messages must not be reported.
    let (ops_b, _) = register(server, OPS, &server.fixture.receiver_url()).await;

    let message = json!({"endpoint_id": customer, "event_type": "invoice.paid", "payload": {"n": 1}});
    let sent = server.call(Method::POST, "/v1/messages", Some(message)).await;
    assert_eq!(sent.status, 201, "{}", sent.text());
    let message_id = sent.json()["id"].as_str().unwrap().to_owned();
    server.wait_for_state(&message_id, "dead").await;
    let (_, body) = ops
        .wait_for("message.attempt.exhausted", "message_id", &message_id)
        .await;
    assert_eq!(
        body["data"],
        json!({"message_id": message_id, "endpoint_id": customer, "owner_id": "acme", "attempts": 1})
    );

    // The copy for ops_b dies too; once it has, a later event marks the point by which a report of it
    // would have been stored.
    let db = db::open(&server.fixture.database_url).await;
    eventually("ops_b's messages are dead", Duration::from_secs(30), || async {
        let messages = db::messages_of(&*db, &ops_b).await;
        (!messages.is_empty() && messages.iter().all(|(_, status)| status == "dead")).then_some(())
    })
    .await;
    disable(server, &customer).await;
    ops.wait_for("endpoint.disabled", "endpoint_id", &customer).await;
    let events = ops.stored_events(&[&ops.endpoint_id, &ops_b]).await;
    let exhausted: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "message.attempt.exhausted")
        .collect();
    assert_eq!(exhausted.len(), 1, "only the customer's message: {events:?}");
    ops.server.stop().await;
}

// Catches a `worker` process that does not forward: only it sees the message die here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_reports_the_dead_messages_it_sees() {
    bounded(
        "operational::a_worker_process_reports_the_dead_messages_it_sees",
        worker_only(),
    )
    .await
}

async fn worker_only() {
    let ops = start_with(Engine::Postgres, false).await;
    let server = &ops.server;
    server.fixture.receiver.set_default_reply(Reply::status(400));
    let (customer, _) = server.endpoint().await;
    let mut config = webhooks_dispatch_server::Config::resolve(server.fixture.settings()).unwrap();
    config.operational_owner = Some(OPS.to_owned());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(webhooks_dispatch_server::run_worker(config, async {
        let _ = stopped.await;
    }));

    let message = json!({"endpoint_id": customer, "event_type": "invoice.paid", "payload": {"n": 1}});
    let sent = server.call(Method::POST, "/v1/messages", Some(message)).await;
    assert_eq!(sent.status, 201, "{}", sent.text());
    let message_id = sent.json()["id"].as_str().unwrap().to_owned();
    let (_, body) = ops
        .wait_for("message.attempt.exhausted", "message_id", &message_id)
        .await;
    assert_eq!(body["data"]["owner_id"], "acme");
    let _ = stop.send(());
    let stopped = tokio::time::timeout(Duration::from_secs(20), worker).await;
    stopped
        .expect("worker stopped")
        .expect("no panic")
        .expect("run_worker Ok");
    ops.server.stop().await;
}
