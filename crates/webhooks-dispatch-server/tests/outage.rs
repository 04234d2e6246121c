//! PostgreSQL going away under a running server and coming back.
//!
//! The server's database URL goes through a [`TcpProxy`]; `cut()` kills every connection (pooled, LISTEN)
//! and refuses new ones, which is what a database crash or a network partition looks like from the
//! service. SQLite is a file in the same process and has no such outage.

use std::time::Duration;

use hyper::Method;
use serde_json::json;
use webhooks_dispatch_testkit::proxy::TcpProxy;

use crate::ops::not_ready;
use crate::support::{bounded, eventually, get, send, Engine, Fixture, TestServer};

// Catches: `/readyz` answering 200 while the database is down, or not recovering without a restart;
// `/healthz` depending on the database; a storage failure answered with another status or code, or with
// the driver's error text (connection details, table names) in the body; a pool that keeps dead connections
// after the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_503_and_generic_500_until_the_database_is_back() {
    bounded(
        "outage::postgres_outage_is_503_and_generic_500_until_the_database_is_back",
        outage_then_recovery(),
    )
    .await
}

async fn outage_then_recovery() {
    let mut fixture = Fixture::new(Engine::Postgres).await;
    let proxy = TcpProxy::in_front_of(&fixture.database_url).await.expect("proxy");
    fixture.database_url = proxy.via(&fixture.database_url);
    let server = TestServer::start_on(fixture, |_| {}).await;
    let (endpoint, _) = server.endpoint().await;
    assert!(proxy.live_connections() > 0, "the server talks through the proxy");

    proxy.cut();
    assert!(
        proxy.wait_live(0, Duration::from_secs(10)).await,
        "{} connections survived the cut",
        proxy.live_connections()
    );
    let accepted_at_cut = proxy.connections_accepted();

    let reply = send(server.addr, get("/readyz")).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.json(), not_ready());
    let reply = send(server.addr, get("/healthz")).await;
    assert_eq!((reply.status, reply.json()), (200, json!({"status": "ok"})));

    let message = json!({"endpoint_id": endpoint, "event_type": "a", "payload": {}});
    let register = json!({"owner_id": "acme", "url": server.fixture.receiver_url()});
    let calls = [
        (Method::POST, "/v1/endpoints".to_owned(), Some(register)),
        (Method::GET, format!("/v1/endpoints/{endpoint}"), None),
        (Method::POST, "/v1/messages".to_owned(), Some(message)),
        (Method::GET, "/v1/messages/msg_x".to_owned(), None),
        (Method::GET, "/v1/messages/msg_x/attempts".to_owned(), None),
    ];
    for (method, path, body) in calls {
        let reply = server.call(method.clone(), &path, body).await;
        // Exactly this and nothing more: the driver's explanation goes to the log only.
        let generic = json!({"error": {"code": "storage", "message": "internal storage error"}});
        assert_eq!((reply.status, reply.json()), (500, generic), "{method} {path}");
    }
    assert!(
        proxy.connections_accepted() > accepted_at_cut,
        "the server never tried to reconnect, so the requests above proved nothing"
    );

    proxy.restore();
    eventually(
        "/readyz is 200 once the database is back",
        Duration::from_secs(30),
        || async { (send(server.addr, get("/readyz")).await.status == 200).then_some(()) },
    )
    .await;
    let (endpoint, _) = server.endpoint().await;
    let message = json!({"endpoint_id": endpoint, "event_type": "a", "payload": {"after": "outage"}});
    let sent = server.call(Method::POST, "/v1/messages", Some(message)).await;
    assert_eq!(sent.status, 201, "{}", sent.text());
    let id = sent.json()["id"].as_str().unwrap().to_owned();
    server.wait_for_state(&id, "delivered").await;
    assert_eq!(server.fixture.receiver.count(), 1);
    server.stop().await;
}
