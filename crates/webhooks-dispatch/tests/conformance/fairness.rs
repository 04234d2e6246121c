//! Fairness between tenants and destinations: an endpoint that keeps failing is held back for new messages
//! too (state in the database, honoured by every claim), and one owner's or one host's endpoints on a tarpit
//! hold at most their cap of a worker's slots while everyone else's messages keep flowing.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use chrono::{DateTime, Utc};
use webhooks_dispatch::store::Value;
use webhooks_dispatch::{DeliverDue, Dispatcher, HoldBack, NewEndpoint, NewMessage, Worker};
use webhooks_dispatch_testkit::receiver::{Receiver, ReceiverOptions, Reply};

use crate::conformance;
use crate::support::{t0, Ctx, Engine, Exec, ManualClock, RunningWorker};

conformance!(
    an_endpoint_failing_in_a_row_is_held_back_for_new_messages_too_until_a_delivery,
    a_429_asking_for_longer_than_the_hold_holds_the_endpoint_that_long,
    without_hold_back_a_failing_endpoint_takes_new_messages_at_once,
    one_owner_on_a_tarpit_holds_at_most_its_cap_while_other_owners_flow,
    one_host_on_a_tarpit_holds_at_most_its_cap_whoever_owns_the_endpoints,
    a_receiver_that_never_completes_tls_costs_the_connect_timeout_not_the_attempt_deadline,
);

const BLOCKED_UNTIL_SET: &str =
    "SELECT count(*) FROM webhooks_dispatch_endpoints WHERE id = $1 AND blocked_until IS NOT NULL";

fn at(now: DateTime<Utc>) -> DeliverDue {
    DeliverDue {
        now: Some(now),
        batch: None,
    }
}

fn secs(n: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(n)
}

async fn attempts(d: &Dispatcher<Exec>, id: &str) -> u32 {
    d.message(id).await.unwrap().attempts
}

async fn send(d: &Dispatcher<Exec>, endpoint: &str, key: &str) -> String {
    d.dispatch(NewMessage::new(endpoint, "a", 1).idempotency_key(key))
        .await
        .unwrap()
        .message_id
}

/// A second receiver on loopback that answers `reply` to everything, under `host` (mapped to 127.0.0.1).
async fn receiver_as(ctx: &Ctx, host: &str, reply: Reply) -> Receiver {
    let mut names = ReceiverOptions::default().names;
    names.push(host.to_owned());
    let r = Receiver::start(
        &ctx.ca,
        ReceiverOptions {
            names,
            ..ReceiverOptions::default()
        },
    )
    .await
    .unwrap();
    r.set_default_reply(reply);
    ctx.resolver.insert(host, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    r
}

async fn endpoint_on(d: &Dispatcher<Exec>, owner: &str, host: &str, r: &Receiver, path: &str) -> String {
    d.register_endpoint(NewEndpoint::new(
        owner,
        format!("https://{host}:{}/{path}", r.port()),
    ))
    .await
    .unwrap()
    .id
}

/// Three 503s in a row hold the endpoint back for 10 s: a new message waits (while another endpoint's goes
/// at once); the first attempt after the hold is the probe; its failure holds it back twice as long, and a
/// delivery ends the hold so the next new message goes at once.
async fn an_endpoint_failing_in_a_row_is_held_back_for_new_messages_too_until_a_delivery(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let failing = receiver_as(&ctx, "failing.test", Reply::status(503)).await;
    let d = ctx
        .builder()
        .clock(ManualClock::at(t0()))
        .hold_back(Some(HoldBack::new(
            3,
            Duration::from_secs(10),
            Duration::from_secs(60),
        )))
        .build();
    let bad = endpoint_on(&d, "o", "failing.test", &failing, "bad").await;
    let (good, _) = ctx.endpoint(&d).await;
    for i in 0..3 {
        send(&d, &bad, &format!("old-{i}")).await;
    }
    assert_eq!(d.deliver_due(at(t0())).await.unwrap().retried, 3);
    assert_eq!(
        ctx.scalar(BLOCKED_UNTIL_SET, &[Value::from(bad.as_str())]).await,
        1
    );

    let held = send(&d, &bad, "new-1").await;
    let other = send(&d, &good, "good-1").await;
    let r = d.deliver_due(at(secs(5))).await.unwrap();
    assert_eq!((r.attempted, r.delivered), (1, 1), "{r:?}");
    assert_eq!(attempts(&d, &other).await, 1);
    assert_eq!(
        attempts(&d, &held).await,
        0,
        "a new message of a held-back endpoint was attempted"
    );
    assert_eq!(failing.count(), 3);

    // After the hold (10 s): the new message is the probe; it fails (a 4th in a row): held 20 s more.
    assert_eq!(d.deliver_due(at(secs(11))).await.unwrap().retried, 1);
    assert_eq!(attempts(&d, &held).await, 1);
    let next = send(&d, &bad, "new-2").await;
    assert_eq!(
        d.deliver_due(at(secs(25))).await.unwrap().attempted,
        0,
        "the hold did not double"
    );
    assert_eq!(attempts(&d, &next).await, 0);

    // The receiver recovers: the probe after the hold delivers and ends the hold.
    failing.set_default_reply(Reply::status(204));
    let r = d.deliver_due(at(secs(32))).await.unwrap();
    assert_eq!(r.delivered, 1, "{r:?}");
    assert_eq!(attempts(&d, &next).await, 1);
    assert_eq!(
        ctx.scalar(BLOCKED_UNTIL_SET, &[Value::from(bad.as_str())]).await,
        0
    );
    let after = send(&d, &bad, "new-3").await;
    assert_eq!(d.deliver_due(at(secs(32))).await.unwrap().delivered, 1);
    assert_eq!(attempts(&d, &after).await, 1);
}

/// A receiver answering 429 with Retry-After: 600 is held back until then, past the 1 s hold it would get.
async fn a_429_asking_for_longer_than_the_hold_holds_the_endpoint_that_long(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let busy = receiver_as(
        &ctx,
        "busy.test",
        Reply::Status {
            status: 429,
            headers: vec![("retry-after".into(), "600".into())],
            body: vec![],
        },
    )
    .await;
    let d = ctx.builder().clock(ManualClock::at(t0())).build();
    let ep = endpoint_on(&d, "o", "busy.test", &busy, "").await;
    for i in 0..3 {
        send(&d, &ep, &format!("old-{i}")).await;
    }
    assert_eq!(d.deliver_due(at(t0())).await.unwrap().retried, 3);
    let new = send(&d, &ep, "new").await;
    assert_eq!(d.deliver_due(at(secs(300))).await.unwrap().attempted, 0);
    assert_eq!(attempts(&d, &new).await, 0);
    busy.set_default_reply(Reply::status(200));
    // At 600 s the three retries are due too: all four go.
    assert_eq!(d.deliver_due(at(secs(601))).await.unwrap().delivered, 4);
}

/// With holding back off, only each message's own backoff applies.
async fn without_hold_back_a_failing_endpoint_takes_new_messages_at_once(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let failing = receiver_as(&ctx, "failing.test", Reply::status(503)).await;
    let d = ctx.builder().clock(ManualClock::at(t0())).hold_back(None).build();
    let bad = endpoint_on(&d, "o", "failing.test", &failing, "").await;
    for i in 0..5 {
        send(&d, &bad, &format!("{i}")).await;
        assert_eq!(d.deliver_due(at(t0())).await.unwrap().retried, 1);
    }
    assert_eq!(
        ctx.scalar(BLOCKED_UNTIL_SET, &[Value::from(bad.as_str())]).await,
        0
    );
}

/// Runs a worker (concurrency 8, per-endpoint 4) over 4 tarpit endpoints with 8 messages each, enqueued
/// first, and 40 messages to one healthy endpoint; `tarpit(i)` gives tarpit endpoint i's owner and host.
/// Without the owner/host cap the tarpit's 16 possible attempts would take all 8 slots for the 10 s attempt
/// deadline; with it (4) the healthy endpoint's messages are all delivered well within it.
async fn tarpit_run(engine: Engine, caps: (usize, usize), tarpit: impl Fn(usize) -> (String, String)) {
    let ctx = Ctx::new(engine).await;
    let d = ctx
        .builder()
        .concurrency(8)
        .per_endpoint_concurrency(4)
        .per_owner_concurrency(caps.0)
        .per_host_concurrency(caps.1)
        .attempt_timeout(Duration::from_secs(10))
        .build();
    let mut hanging = Vec::new();
    let mut tarpits = Vec::new();
    for i in 0..4 {
        let (owner, host) = tarpit(i);
        let r = receiver_as(&ctx, &host, Reply::Hang).await;
        tarpits.push(endpoint_on(&d, &owner, &host, &r, "").await);
        hanging.push(r);
    }
    let msgs = tarpits
        .iter()
        .flat_map(|ep| (0..8).map(move |i| NewMessage::new(ep, "a", i)))
        .collect();
    d.dispatch_many(msgs).await.unwrap();
    let good = d
        .register_endpoint(NewEndpoint::new("healthy", ctx.url()))
        .await
        .unwrap()
        .id;
    d.dispatch_many((0..40).map(|i| NewMessage::new(&good, "a", i)).collect())
        .await
        .unwrap();
    let running = RunningWorker::spawn(Worker::new(d.clone()));
    let flowed = ctx.receiver.wait_for(40, Duration::from_secs(5)).await;
    let in_flight: usize = hanging.iter().map(Receiver::count).sum();
    running.stop().await;
    assert!(
        flowed,
        "the healthy owner's messages were held up behind the tarpit"
    );
    assert_eq!(
        in_flight, 4,
        "the tarpit held more (or fewer) than its cap of slots"
    );
}

async fn one_owner_on_a_tarpit_holds_at_most_its_cap_while_other_owners_flow(engine: Engine) {
    tarpit_run(engine, (4, 8), |i| {
        ("tarpit".to_owned(), format!("tarpit{i}.test"))
    })
    .await;
}

async fn one_host_on_a_tarpit_holds_at_most_its_cap_whoever_owns_the_endpoints(engine: Engine) {
    tarpit_run(engine, (8, 4), |i| {
        (format!("owner{i}"), "tarpit.test".to_owned())
    })
    .await;
}

/// A listener that accepts TCP and never says a word (no TLS server hello): the attempt ends at the connect
/// timeout (300 ms here) as unreachable, not at the 10 s attempt deadline.
async fn a_receiver_that_never_completes_tls_costs_the_connect_timeout_not_the_attempt_deadline(
    engine: Engine,
) {
    let ctx = Ctx::new(engine).await;
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    ctx.resolver
        .insert("silent.test", vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    let d = ctx
        .builder()
        .clock(ManualClock::at(t0()))
        .attempt_timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_millis(300))
        .build();
    let ep = d
        .register_endpoint(NewEndpoint::new("o", format!("https://silent.test:{port}/")))
        .await
        .unwrap()
        .id;
    let id = send(&d, &ep, "k").await;
    let started = std::time::Instant::now();
    assert_eq!(d.deliver_due(at(t0())).await.unwrap().retried, 1);
    let took = started.elapsed();
    silent.abort();
    assert!(took < Duration::from_secs(5), "the attempt took {took:?}");
    let attempt = &d.list_attempts(&id).await.unwrap()[0];
    assert_eq!(attempt.status_code, None);
    assert_eq!(attempt.error.as_deref(), Some("tls handshake timed out"));
}
