//! Operational routes on a live server: probes, metrics, the OpenAPI document.

use std::time::Duration;

use hyper::Method;
use serde_json::json;

use crate::engines;
use crate::support::{build, get, send, Engine, TestServer};

engines!(
    health_and_readiness_probes_are_open,
    metrics_count_dispatches_outcomes_and_backlog,
    openapi_document_matches_the_live_router,
);

async fn health_and_readiness_probes_are_open(engine: Engine) {
    let server = TestServer::start(engine).await;
    for path in ["/healthz", "/readyz"] {
        let reply = send(server.addr, get(path)).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    }
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
    tokio::time::sleep(Duration::from_millis(20)).await;
    let reply = send(idle.addr, get("/metrics")).await;
    assert_eq!(reply.status, 200);
    assert!(reply.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = reply.text();
    assert_eq!(sample(&text, "webhooks_dispatch_messages_dispatched_total"), 2.0);
    assert_eq!(sample(&text, "webhooks_dispatch_due_messages"), 2.0);
    assert!(sample(&text, "webhooks_dispatch_oldest_due_age_seconds") > 0.0);
    for outcome in ["delivered", "retrying", "dead"] {
        assert!(text.contains(&format!(
            "webhooks_dispatch_attempts_total{{outcome=\"{outcome}\"}}"
        )));
    }
    assert!(text.contains("webhooks_dispatch_attempt_duration_seconds_bucket"));
    idle.stop().await;

    // With a worker, a delivery is counted by outcome and timed. Attempt counters are process-wide and
    // other tests deliver too, so compare against the value before.
    let server = TestServer::start(engine).await;
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
