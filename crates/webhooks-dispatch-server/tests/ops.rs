//! Operational routes on a live server: probes, metrics, the OpenAPI document.

use std::time::Duration;

use hyper::Method;
use serde_json::json;

use crate::db;
use crate::engines;
use crate::process::{service_command, Service};
use crate::support::{
    authorize, bounded, build, eventually, get, send, Engine, Fixture, TestServer, API_KEY,
};

engines!(
    health_and_readiness_probes_are_open,
    readiness_is_503_while_the_tables_are_missing_and_liveness_stays_200,
    metrics_count_dispatches_outcomes_and_backlog,
    openapi_document_matches_the_live_router,
);

async fn health_and_readiness_probes_are_open(engine: Engine) {
    let server = TestServer::start(engine).await;
    for (path, status) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let reply = send(server.addr, get(path)).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(reply.json(), json!({ "status": status }), "{path}");
    }
    server.stop().await;
}

/// What `/readyz` answers when the database cannot serve the probe.
pub fn not_ready() -> serde_json::Value {
    json!({"error": {"code": "storage", "message": "the database is not reachable or not migrated"}})
}

// Catches: a readiness probe that answers 200 whatever the database says (or 500 instead of 503), and a
// liveness probe that depends on the database (a restart would not fix a database problem).
async fn readiness_is_503_while_the_tables_are_missing_and_liveness_stays_200(engine: Engine) {
    let server = TestServer::start_with(engine, |c| c.worker = false).await;
    let db = db::open(&server.fixture.database_url).await;
    // Every table goes, the migrations table too, so the database is again one that migrate() has never seen.
    db.batch_execute(
        "DROP TABLE webhooks_dispatch_attempts; DROP TABLE webhooks_dispatch_event_skips; \
         DROP TABLE webhooks_dispatch_outbox; DROP TABLE webhooks_dispatch_events; \
         DROP TABLE webhooks_dispatch_endpoint_keys; DROP TABLE webhooks_dispatch_endpoints; \
         DROP TABLE webhooks_dispatch_migrations;",
    )
    .await
    .expect("drop the tables");
    let reply = send(server.addr, get("/readyz")).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.json(), not_ready());
    let reply = send(server.addr, get("/healthz")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // Ready again as soon as the tables are back, without a restart.
    webhooks_dispatch::Dispatcher::new(db.clone())
        .migrate()
        .await
        .expect("migrate");
    eventually(
        "/readyz is 200 after the migration",
        Duration::from_secs(10),
        || async { (send(server.addr, get("/readyz")).await.status == 200).then_some(()) },
    )
    .await;
    server.stop().await;
}

fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

async fn metrics_count_dispatches_outcomes_and_backlog(engine: Engine) {
    // Without a worker, dispatched messages stay due: the backlog gauges see them.
    let idle = TestServer::start_with(engine, |c| c.worker = false).await;
    let (endpoint, _) = idle.endpoint().await;
    for _ in 0..2 {
        let msg = json!({"endpoint_id": endpoint, "event_type": "a", "payload": {}});
        assert_eq!(
            idle.call(Method::POST, "/v1/messages", Some(msg)).await.status,
            201
        );
    }
    // The oldest message's age grows from zero: scrape until it has (timestamps have microsecond precision).
    let reply = eventually(
        "the oldest due message has an age",
        Duration::from_secs(10),
        || async {
            let reply = send(idle.addr, get("/metrics")).await;
            (sample(&reply.text(), "webhooks_dispatch_oldest_due_age_seconds") > 0.0).then_some(reply)
        },
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = reply.text();
    assert_eq!(sample(&text, "webhooks_dispatch_messages_dispatched_total"), 2.0);
    assert_eq!(sample(&text, "webhooks_dispatch_due_messages"), 2.0);
    for outcome in ["delivered", "retrying", "dead"] {
        assert!(text.contains(&format!(
            "webhooks_dispatch_attempts_total{{outcome=\"{outcome}\"}}"
        )));
    }
    assert!(text.contains("webhooks_dispatch_attempt_duration_seconds_bucket"));
    idle.stop().await;

    // With a worker, a delivery is counted by outcome and timed. Attempt counters are process-wide and
    // other tests deliver too, so compare against the value before. The backlog is read at every scrape
    // here, so the last one sees the delivery.
    let server = TestServer::start_with(engine, |c| c.metrics_refresh = Duration::from_millis(1)).await;
    let delivered = "webhooks_dispatch_attempts_total{outcome=\"delivered\"}";
    let count = "webhooks_dispatch_attempt_duration_seconds_count";
    let before = send(server.addr, get("/metrics")).await.text();
    let (endpoint, _) = server.endpoint().await;
    let msg = json!({"endpoint_id": endpoint, "event_type": "a", "payload": {}});
    let sent = server.call(Method::POST, "/v1/messages", Some(msg)).await.json();
    server
        .wait_for_state(sent["id"].as_str().unwrap(), "delivered")
        .await;
    let after = send(server.addr, get("/metrics")).await.text();
    assert!(sample(&after, delivered) > sample(&before, delivered), "{after}");
    assert!(sample(&after, count) > sample(&before, count), "{after}");
    assert_eq!(sample(&after, "webhooks_dispatch_due_messages"), 0.0);
    server.stop().await;
}

async fn openapi_document_matches_the_live_router(engine: Engine) {
    let server = TestServer::start(engine).await;
    let reply = send(server.addr, get("/openapi.json")).await;
    assert_eq!(reply.status, 200);
    let doc = reply.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys().filter(|m| *m != "parameters") {
            let method: Method = method.to_uppercase().parse().unwrap();
            let concrete = path.replace("{id}", "msg_x");
            let body = (method == Method::POST).then(|| "{}".to_owned());
            let mut req = build(method.clone(), &concrete, body);
            crate::support::authorize(&mut req, crate::support::API_KEY);
            let reply = send(server.addr, req).await;
            // The router's own fallbacks answer these two codes; any handler answers something else.
            let fallback = serde_json::from_slice::<serde_json::Value>(&reply.body)
                .ok()
                .and_then(|j| j["error"]["code"].as_str().map(str::to_owned))
                .is_some_and(|c| c == "not_found" || c == "method_not_allowed");
            assert!(!fallback, "{method} {path} is documented but not routed");
            checked += 1;
        }
    }
    assert!(checked >= 10);
    server.stop().await;
}

// Catches: `/metrics` answering without a key although `metrics_require_key` is on (or refusing the API's
// own key), and the setting closing the probes too. Through the binary, so the environment variable is
// the one documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_an_api_key_when_metrics_require_key_is_on() {
    bounded(
        "ops::metrics_need_an_api_key_when_metrics_require_key_is_on",
        async {
            let fixture = Fixture::new(Engine::Sqlite).await;
            let mut cmd = service_command(&fixture, &["serve", "--no-worker"]);
            cmd.env("WEBHOOKS_DISPATCH_METRICS_REQUIRE_KEY", "true");
            let (served, addr) = Service::serve(cmd).await;
            let open = send(addr, get("/metrics")).await;
            assert_eq!((open.status, open.code()), (401, "unauthorized".to_owned()));
            assert_eq!(open.headers["www-authenticate"], "Bearer");
            let mut wrong = get("/metrics");
            authorize(&mut wrong, "not-the-key-0123456789");
            assert_eq!(send(addr, wrong).await.status, 401);
            let mut keyed = get("/metrics");
            authorize(&mut keyed, API_KEY);
            let reply = send(addr, keyed).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            assert!(reply.text().contains("webhooks_dispatch_due_messages"));
            for probe in ["/healthz", "/readyz"] {
                assert_eq!(send(addr, get(probe)).await.status, 200, "{probe}");
            }
            let (status, _, _) = served.terminate().await;
            assert!(status.success(), "{status:?}");
        },
    )
    .await
}
