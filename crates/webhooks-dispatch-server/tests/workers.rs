//! Deliveries across processes and across shutdown, with the real binary: `serve --no-worker` beside a
//! separate `worker`, and SIGTERM while deliveries are in flight.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::Method;
use serde_json::{json, Value};
use webhooks_dispatch_testkit::receiver::{Receiver, ReceiverOptions, Reply};

use crate::db;
use crate::engines;
use crate::process::{service_command, Service};
use crate::support::{bounded, call, eventually, url_of, Engine, Fixture};

engines!(sigterm_lets_in_flight_deliveries_finish_within_the_grace_and_releases_the_rest);

/// Registers an endpoint for `url` through the API at `addr`; returns its id.
async fn register(addr: SocketAddr, url: &str) -> String {
    let reply = call(
        addr,
        Method::POST,
        "/v1/endpoints",
        Some(json!({"owner_id": "acme", "url": url})),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()["id"].as_str().unwrap().to_owned()
}

/// Enqueues one message through the API at `addr`; returns its id.
async fn enqueue(addr: SocketAddr, endpoint: &str, n: usize) -> String {
    let body = json!({"endpoint_id": endpoint, "event_type": "a", "payload": {"n": n}});
    let reply = call(addr, Method::POST, "/v1/messages", Some(body)).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()["id"].as_str().unwrap().to_owned()
}

/// `GET /v1/messages/{id}` through the API at `addr`.
async fn message(addr: SocketAddr, id: &str) -> Value {
    let reply = call(addr, Method::GET, &format!("/v1/messages/{id}"), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// The worker's closing summary ("worker stopped") from a process's JSON logs.
fn worker_report(logs: &str) -> Value {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["message"] == "worker stopped")
        .unwrap_or_else(|| panic!("no worker report in:\n{logs}"))
}

// Catches: `--no-worker` ignored (the API process delivers), a `worker` command that does not deliver or
// does not share the database with `serve`, and either process not exiting 0 on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_no_worker_delivers_nothing_and_a_separate_worker_delivers_it() {
    bounded(
        "workers::serve_no_worker_delivers_nothing_and_a_separate_worker_delivers_it",
        separate_worker(),
    )
    .await
}

async fn separate_worker() {
    let fixture = Fixture::new(Engine::Postgres).await;
    let (api, addr) = Service::serve(service_command(&fixture, &["serve", "--no-worker"])).await;
    let listening = api.wait_for_log(|e| e["message"] == "listening").await;
    assert_eq!(listening["worker"], false, "{listening}");
    let endpoint = register(addr, &fixture.receiver_url()).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(enqueue(addr, &endpoint, n).await);
    }
    // Proving an absence needs a bounded wait: a worker in `serve` would poll every 100 ms and be woken by
    // NOTIFY at once, so 1.5 s gives it every chance to deliver.
    assert!(
        !fixture.receiver.wait_for(1, Duration::from_millis(1500)).await,
        "serve --no-worker delivered"
    );
    for id in &ids {
        let m = message(addr, id).await;
        assert_eq!(
            (&m["state"], &m["attempts"]),
            (&json!("pending"), &json!(0)),
            "{m}"
        );
    }

    let worker = Service::spawn(service_command(&fixture, &["worker"]));
    assert!(
        fixture.receiver.wait_for(3, Duration::from_secs(30)).await,
        "the worker did not deliver:\n{}",
        worker.logs()
    );
    for id in &ids {
        eventually(
            "delivered, as seen by serve's API",
            Duration::from_secs(30),
            || async { (message(addr, id).await["state"] == "delivered").then_some(()) },
        )
        .await;
    }

    let (status, _, worker_logs) = worker.terminate().await;
    assert!(status.success(), "worker exit: {status:?}\n{worker_logs}");
    assert_eq!(worker_report(&worker_logs)["delivered"], 3, "{worker_logs}");
    let (status, _, api_logs) = api.terminate().await;
    assert!(status.success(), "serve exit: {status:?}\n{api_logs}");
    assert!(
        !api_logs.contains("webhook attempt"),
        "serve attempted deliveries:\n{api_logs}"
    );
    assert_eq!(fixture.receiver.count(), 3, "each message delivered once");
}

// Catches: a shutdown that drops in-flight deliveries at once (the answered ones would be pending), one
// that waits for them past the grace (slow exit; the slow ones recorded as timeouts), one that leaves
// messages claimed (lease_token set, so they wait for the lease to expire) or counts released ones as
// failed attempts, and a non-zero exit status after a graceful stop.
async fn sigterm_lets_in_flight_deliveries_finish_within_the_grace_and_releases_the_rest(engine: Engine) {
    let fixture = Fixture::new(engine).await;
    // Answered 1 s after arrival, well inside the 3 s grace; the other receiver answers long after it.
    fixture
        .receiver
        .set_default_reply(Reply::Delayed(Duration::from_secs(1)));
    let slow = Receiver::start(&fixture.ca, ReceiverOptions::default())
        .await
        .expect("second receiver");
    slow.set_default_reply(Reply::Delayed(Duration::from_secs(120)));
    let grace = Duration::from_secs(3);
    let mut cmd = service_command(&fixture, &["serve"]);
    cmd.env("WEBHOOKS_DISPATCH_SHUTDOWN_GRACE", "3s")
        .env("WEBHOOKS_DISPATCH_ATTEMPT_TIMEOUT", "60s");
    let (served, addr) = Service::serve(cmd).await;

    let fast_endpoint = register(addr, &fixture.receiver_url()).await;
    let slow_endpoint = register(addr, &url_of(&slow)).await;
    let mut fast = Vec::new();
    let mut stuck = Vec::new();
    for n in 0..2 {
        fast.push(enqueue(addr, &fast_endpoint, n).await);
        stuck.push(enqueue(addr, &slow_endpoint, n).await);
    }
    let patience = Duration::from_secs(30);
    assert!(
        fixture.receiver.wait_for(2, patience).await,
        "fast deliveries in flight"
    );
    assert!(slow.wait_for(2, patience).await, "slow deliveries in flight");

    let (status, took, logs) = served.terminate().await;
    assert!(status.success(), "exit after SIGTERM: {status:?}\n{logs}");
    assert!(
        took < grace + Duration::from_secs(5),
        "took {took:?} with a {grace:?} grace"
    );

    let db = db::open(&fixture.database_url).await;
    let rows = db::outbox(&*db).await;
    assert_eq!(rows.len(), 4, "{rows:?}");
    for row in &rows {
        assert_eq!(row.lease_token, None, "still claimed: {row:?}");
        let expected = if fast.contains(&row.id) {
            ("delivered", 1)
        } else {
            assert!(stuck.contains(&row.id), "{row:?}");
            ("pending", 0)
        };
        assert_eq!((row.status.as_str(), row.attempts), expected, "{row:?}");
    }
    let attempts = db::attempts(&*db).await;
    let mut recorded: Vec<&str> = attempts.iter().map(|a| a.message_id.as_str()).collect();
    recorded.sort_unstable();
    fast.sort_unstable();
    assert_eq!(
        recorded, fast,
        "exactly the answered deliveries are recorded: {attempts:?}"
    );
    for a in &attempts {
        assert_eq!(
            (a.attempt_no, a.outcome.as_str(), a.status_code),
            (1, "delivered", Some(200)),
            "{a:?}"
        );
    }
    // The worker's own account agrees with the database.
    let report = worker_report(&logs);
    assert_eq!(
        (&report["delivered"], &report["released"]),
        (&json!(2), &json!(2)),
        "{report}"
    );
}
