//! End-to-end demo: the main job of webhooks-dispatch, on one machine, with nothing to set up.
//!
//! Uses `DATABASE_URL` if set, otherwise starts a throwaway PostgreSQL cluster. Starts an HTTPS receiver on
//! loopback with a certificate from a throwaway CA, registers it as a customer endpoint, dispatches events,
//! delivers them (the receiver fails the first request with 503, so a retry shows), verifies every signature
//! on the receiving side, and prints the attempt log. Sends nothing beyond 127.0.0.1.

use std::error::Error;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use webhooks_dispatch::ssrf::StaticResolver;
use webhooks_dispatch::{verify, DeliverDue, Dispatcher, NewEndpoint, NewMessage, RetryPolicy};
use webhooks_dispatch_testkit::pg::{ClusterOptions, PgCluster};
use webhooks_dispatch_testkit::receiver::{Receiver, ReceiverOptions, Reply, TestCa};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("webhooks_dispatch=info")
        .init();

    // Keep the cluster alive until the end of main; dropping it stops the server and deletes its files.
    let (database_url, _cluster) = match std::env::var("DATABASE_URL") {
        Ok(url) => {
            // The demo promises to stay on this machine; a remote server would receive its traffic.
            webhooks_dispatch_testkit::pg::require_loopback(&url)?;
            (url, None)
        }
        Err(_) => {
            println!("DATABASE_URL not set: starting a throwaway PostgreSQL cluster ...");
            let cluster = PgCluster::start(ClusterOptions::default())?;
            (cluster.admin_url(), Some(cluster))
        }
    };
    let pool = sqlx::PgPool::connect(&database_url).await?;

    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, ReceiverOptions::default()).await?;
    receiver.push_replies([Reply::status(503)]);
    // "receiver.test" stands for a customer's public host name; the injected resolver maps it to loopback, and
    // loopback is allowlisted explicitly (production allows only globally routable addresses).
    let resolver = StaticResolver::new();
    resolver.insert("receiver.test", vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    let dispatcher = Dispatcher::builder(pool)
        .resolver(Arc::new(resolver))
        .allow_net("127.0.0.1/32".parse()?)
        .root_certificates(ca.root_store())
        .retry_policy(RetryPolicy {
            base_delay: Duration::from_secs(1),
            ..RetryPolicy::default()
        })
        .build();
    dispatcher.migrate().await?;

    let url = format!("https://receiver.test:{}/webhooks", receiver.port());
    let endpoint = dispatcher
        .register_endpoint(
            NewEndpoint::new("customer_42", &url).event_types(["invoice.paid", "invoice.voided"]),
        )
        .await?;
    let secret = endpoint.secret.expect("an HMAC endpoint has a secret");
    println!("registered {} -> {url}", endpoint.id);
    println!("  secret (shown once): {}", secret.expose());

    let mut messages = Vec::new();
    for (n, event) in ["invoice.paid", "invoice.voided"].into_iter().enumerate() {
        let payload = serde_json::json!({"type": event, "data": {"invoice": 1000 + n, "amount_cents": 4200}});
        let sent = dispatcher
            .dispatch(NewMessage::new(&endpoint.id, event, payload).idempotency_key(format!("invoice-{n}")))
            .await?;
        println!("dispatched {event} as {}", sent.message_id);
        messages.push(sent.message_id);
    }
    let refused = dispatcher
        .dispatch(NewMessage::new(
            &endpoint.id,
            "customer.deleted",
            serde_json::json!({}),
        ))
        .await
        .unwrap_err();
    println!(
        "dispatch of an unsubscribed event type refused: {} ({})",
        refused.code(),
        refused
    );

    for round in 1..=3 {
        let report = dispatcher.deliver_due(DeliverDue::default()).await?;
        println!("delivery round {round}: {report:?}");
        if report.attempted == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }

    for r in receiver.received() {
        let ok = verify(
            &secret,
            |h| r.headers.get(h).and_then(|v| v.to_str().ok()),
            &r.body,
        )
        .is_ok();
        println!(
            "receiver got {} {} webhook-id={} signature {}",
            r.method,
            r.path,
            r.headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-"),
            if ok { "verified" } else { "INVALID" }
        );
    }

    println!("\nattempt log:");
    println!(
        "{:<32} {:>3} {:>6} {:>9} {:>8}  error",
        "message", "no", "status", "outcome", "latency"
    );
    for id in &messages {
        for a in dispatcher.list_attempts(id).await? {
            println!(
                "{:<32} {:>3} {:>6} {:>9} {:>6}ms  {}",
                a.message_id,
                a.attempt_no,
                a.status_code.map_or("-".to_owned(), |s| s.to_string()),
                a.outcome.as_str(),
                a.latency_ms,
                a.error.unwrap_or_default()
            );
        }
    }
    Ok(())
}
