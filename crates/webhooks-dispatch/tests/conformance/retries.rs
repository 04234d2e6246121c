use std::time::Duration;

use chrono::{DateTime, Utc};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use webhooks_dispatch::ssrf::StaticResolver;
use webhooks_dispatch::{
    DeliverDue, Dispatcher, MessageState, NewEndpoint, NewMessage, Outcome, RetryPolicy,
};
use webhooks_dispatch_testkit::receiver::{ClosedPort, Receiver, ReceiverOptions, Reply, TestCa};

use crate::conformance;
use crate::support::{t0, Ctx, Engine, ManualClock, RECEIVER_HOST};

conformance!(
    invariant4_transient_failures_back_off_then_dead_letter,
    invariant4_permanent_statuses_dead_letter_at_once,
    invariant4_408_429_503_retry_and_retry_after_is_honoured,
    invariant4_network_errors_are_retried_and_recorded_without_status,
    invariant4_final_states_never_change,
    outcomes_with_and_without_status_record_on_one_connection,
    unreachable_endpoint_backs_off_its_whole_queue_but_an_answering_one_does_not,
    endpoint_backoff_follows_timeouts_tls_and_dns_failures,
);

/// Registers an endpoint on a loopback port that refuses every connection at once (bound, never listening,
/// and held for the test's life so no other process can take it). Returns its id and the port's holder.
async fn unreachable_endpoint<E: webhooks_dispatch::store::Executor>(
    d: &webhooks_dispatch::Dispatcher<E>,
) -> (String, ClosedPort) {
    let closed = ClosedPort::bind(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
    let id = d
        .register_endpoint(webhooks_dispatch::NewEndpoint::new(
            "o",
            format!("https://receiver.test:{}/", closed.port()),
        ))
        .await
        .unwrap()
        .id;
    (id, closed)
}

fn status(code: u16) -> Reply {
    Reply::Status {
        status: code,
        headers: vec![],
        body: vec![],
    }
}

fn at(now: DateTime<Utc>) -> DeliverDue {
    DeliverDue {
        now: Some(now),
        batch: None,
    }
}

fn secs(s: i64) -> chrono::Duration {
    chrono::Duration::seconds(s)
}

async fn invariant4_transient_failures_back_off_then_dead_letter(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let clock = ManualClock::at(t0());
    let d = ctx.dispatcher_at(clock, RetryPolicy::default());
    let (ep, _) = ctx.endpoint(&d).await;
    ctx.receiver.set_default_reply(status(500));
    let sent = d.dispatch(NewMessage::new(&ep, "a", 1)).await.unwrap();

    // Default policy: 6 attempts, each retry 60 s × 2^(n−1) after the previous attempt.
    let mut now = t0();
    for n in 1..=5u32 {
        let r = d.deliver_due(at(now)).await.unwrap();
        assert_eq!((r.attempted, r.retried), (1, 1), "attempt {n}");
        let attempts = d.list_attempts(&sent.message_id).await.unwrap();
        let a = attempts.last().unwrap();
        assert_eq!(
            (a.attempt_no, a.outcome, a.status_code),
            (n, Outcome::Retrying, Some(500))
        );
        assert_eq!(a.error.as_deref(), Some("endpoint answered HTTP 500"));
        // attempted_at is the drain's `now` plus the time the drain had been running.
        assert!(a.attempted_at >= now && a.attempted_at < now + secs(5));
        let next = a.next_attempt_at.expect("retry scheduled");
        assert_eq!(next - a.attempted_at, secs(60 << (n - 1)));
        let early = d
            .deliver_due(at(next - chrono::Duration::milliseconds(1)))
            .await
            .unwrap();
        assert_eq!(early.attempted, 0, "attempt {} ran early", n + 1);
        now = next;
    }
    let r = d.deliver_due(at(now)).await.unwrap();
    assert_eq!((r.attempted, r.dead), (1, 1));
    assert_eq!(ctx.receiver.count(), 6);
    let attempts = d.list_attempts(&sent.message_id).await.unwrap();
    assert_eq!(attempts.len(), 6);
    let last = attempts.last().unwrap();
    assert_eq!((last.outcome, last.next_attempt_at), (Outcome::Dead, None));
    let m = d.message(&sent.message_id).await.unwrap();
    assert_eq!((m.state, m.attempts), (MessageState::Dead, 6));
}

async fn invariant4_permanent_statuses_dead_letter_at_once(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher_at(ManualClock::at(t0()), RetryPolicy::default());
    let (ep, _) = ctx.endpoint(&d).await;
    // 410 last: it also disables the endpoint (see events.rs), which would refuse the dispatches after it.
    let codes = [400u16, 401, 403, 404, 422, 301, 302, 307, 308, 410];
    let mut ids = Vec::new();
    for code in codes {
        // Redirects point back at the receiver: following one would show up as an extra request.
        let location = format!("{}?followed={code}", ctx.url());
        ctx.receiver.push_replies([Reply::Status {
            status: code,
            headers: vec![("location".into(), location)],
            body: vec![],
        }]);
        let id = d
            .dispatch(NewMessage::new(&ep, "a", code))
            .await
            .unwrap()
            .message_id;
        let r = d.deliver_due(at(t0())).await.unwrap();
        assert_eq!((r.attempted, r.dead), (1, 1), "HTTP {code} must be permanent");
        ids.push(id);
    }
    assert_eq!(ctx.receiver.count(), codes.len(), "a redirect was followed");
    assert!(ctx
        .receiver
        .received()
        .iter()
        .all(|r| !r.path.contains("followed")));
    for (id, code) in ids.iter().zip(codes) {
        let attempts = d.list_attempts(id).await.unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(
            (attempts[0].status_code, attempts[0].outcome),
            (Some(code), Outcome::Dead)
        );
    }
}

async fn invariant4_408_429_503_retry_and_retry_after_is_honoured(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher_at(ManualClock::at(t0()), RetryPolicy::default());
    let http_date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
    let cases: Vec<(Reply, Option<(i64, i64)>)> = vec![
        (status(408), Some((60, 60))),
        (
            Reply::Status {
                status: 429,
                headers: vec![("retry-after".into(), "120".into())],
                body: vec![],
            },
            Some((120, 120)),
        ),
        (
            // An HTTP-date about an hour ahead of the wall clock.
            Reply::Status {
                status: 503,
                headers: vec![("retry-after".into(), http_date)],
                body: vec![],
            },
            Some((3590, 3601)),
        ),
        (
            // Capped at 24 h.
            Reply::Status {
                status: 429,
                headers: vec![("retry-after".into(), "999999999".into())],
                body: vec![],
            },
            Some((86_400, 86_400)),
        ),
        (
            // Retry-After is only honoured on 429 and 503.
            Reply::Status {
                status: 500,
                headers: vec![("retry-after".into(), "5".into())],
                body: vec![],
            },
            Some((60, 60)),
        ),
    ];
    for (reply, window) in cases {
        // An endpoint per case: one that failed three times in a row would be held back (hold_back.rs).
        let (ep, _) = ctx.endpoint(&d).await;
        ctx.receiver.push_replies([reply]);
        let id = d.dispatch(NewMessage::new(&ep, "a", 1)).await.unwrap().message_id;
        let r = d.deliver_due(at(t0())).await.unwrap();
        assert_eq!(r.retried, 1);
        let a = &d.list_attempts(&id).await.unwrap()[0];
        assert_eq!(a.outcome, Outcome::Retrying);
        let delay = (a.next_attempt_at.unwrap() - a.attempted_at).num_seconds();
        let (lo, hi) = window.unwrap();
        assert!(
            (lo..=hi).contains(&delay),
            "status {:?}: delay {delay}",
            a.status_code
        );
    }
}

async fn invariant4_network_errors_are_retried_and_recorded_without_status(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher_at(ManualClock::at(t0()), RetryPolicy::default());
    // A loopback port with nothing listening: connection refused.
    let (ep, _closed) = unreachable_endpoint(&d).await;
    let id = d.dispatch(NewMessage::new(&ep, "a", 1)).await.unwrap().message_id;
    let r = d.deliver_due(at(t0())).await.unwrap();
    assert_eq!((r.attempted, r.retried), (1, 1));
    let a = &d.list_attempts(&id).await.unwrap()[0];
    assert_eq!((a.status_code, a.outcome), (None, Outcome::Retrying));
    assert_eq!(a.error.as_deref(), Some("connection failed"));

    // A TLS failure (certificate for another name) is retried too.
    ctx.resolver
        .insert("wrong-name.test", vec![std::net::Ipv4Addr::LOCALHOST.into()]);
    let ep = d
        .register_endpoint(webhooks_dispatch::NewEndpoint::new(
            "o",
            format!("https://wrong-name.test:{}/", ctx.receiver.port()),
        ))
        .await
        .unwrap();
    let id = d
        .dispatch(NewMessage::new(&ep.id, "a", 1))
        .await
        .unwrap()
        .message_id;
    d.deliver_due(at(t0())).await.unwrap();
    let a = &d.list_attempts(&id).await.unwrap()[0];
    assert_eq!((a.status_code, a.outcome), (None, Outcome::Retrying));
    assert_eq!(a.error.as_deref(), Some("tls handshake failed"));
    assert_eq!(
        ctx.receiver.count(),
        0,
        "no request may be sent over an unverified connection"
    );
}

async fn invariant4_final_states_never_change(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher_at(ManualClock::at(t0()), RetryPolicy::default());
    let (ep, _) = ctx.endpoint(&d).await;
    let delivered = d.dispatch(NewMessage::new(&ep, "a", 1)).await.unwrap().message_id;
    d.deliver_due(at(t0())).await.unwrap();
    ctx.receiver.set_default_reply(status(404));
    let dead = d.dispatch(NewMessage::new(&ep, "a", 2)).await.unwrap().message_id;
    d.deliver_due(at(t0())).await.unwrap();
    ctx.receiver.set_default_reply(status(200));
    let later = d.deliver_due(at(t0() + secs(365 * 86_400))).await.unwrap();
    assert_eq!(later.attempted, 0);
    assert_eq!(
        d.message(&delivered).await.unwrap().state,
        MessageState::Delivered
    );
    assert_eq!(d.message(&dead).await.unwrap().state, MessageState::Dead);
    assert_eq!(d.list_attempts(&delivered).await.unwrap().len(), 1);
    assert_eq!(d.list_attempts(&dead).await.unwrap().len(), 1);
    assert_eq!(ctx.receiver.count(), 2);
}

/// Regression: statements are cached per connection with the parameter types of their first use, so a
/// connection that first recorded an attempt without a status (or next attempt time) must still record one
/// with them. Runs every drain over a single database connection.
async fn outcomes_with_and_without_status_record_on_one_connection(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let single: crate::support::Exec = match engine {
        Engine::Sqlx => std::sync::Arc::new(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&ctx.db_url)
                .await
                .unwrap(),
        ),
        Engine::TokioPostgres => {
            let pool = crate::support::deadpool_pool(&ctx.db_url);
            pool.resize(1);
            std::sync::Arc::new(pool)
        }
        // One connection is all this adapter ever uses.
        Engine::Sqlite => ctx.exec.clone(),
    };
    let d = ctx
        .dispatcher_at(ManualClock::at(t0()), RetryPolicy::default())
        .using(single);
    let (ep, _) = ctx.endpoint(&d).await;
    let (refused, _closed) = unreachable_endpoint(&d).await;
    ctx.receiver.set_default_reply(status(404));
    // No status + a next attempt; then a status + no next attempt; then a status + a next attempt.
    let plan: [(&str, Reply, Option<u16>); 3] = [
        (&refused, status(200), None),
        (&ep, status(404), Some(404)),
        (&ep, status(503), Some(503)),
    ];
    for (target, reply, expected) in plan {
        ctx.receiver.set_default_reply(reply);
        let id = d
            .dispatch(NewMessage::new(target, "a", 1))
            .await
            .unwrap()
            .message_id;
        let r = d.deliver_due(at(t0())).await.unwrap();
        assert_eq!(r.attempted, 1);
        assert_eq!(d.list_attempts(&id).await.unwrap()[0].status_code, expected);
    }
}

/// A down endpoint costs one attempt per backoff step, not one timeout per queued message: the endpoint
/// waits for the failed attempt's retry time, its other messages with it (they keep their own times: the
/// wait is the endpoint's). An endpoint that answers (even 503) is judged per message (until it has failed
/// often enough in a row to be held back: off here, see `hold_back.rs`).
async fn unreachable_endpoint_backs_off_its_whole_queue_but_an_answering_one_does_not(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx
        .builder()
        .clock(ManualClock::at(t0()))
        .per_endpoint_concurrency(1)
        .hold_back(None)
        .build();
    let (down, _closed) = unreachable_endpoint(&d).await;
    let (up, _) = ctx.endpoint(&d).await;
    ctx.receiver.set_default_reply(status(503));
    let mut down_ids = Vec::new();
    for i in 0..4 {
        down_ids.push(
            d.dispatch(NewMessage::new(&down, "a", i))
                .await
                .unwrap()
                .message_id,
        );
        d.dispatch(NewMessage::new(&up, "a", i)).await.unwrap();
    }
    // One message per endpoint per drain (cap 1): the down endpoint's first attempt fails to connect.
    // (Messages dispatched in the same instant are taken in id order, which is random within a millisecond,
    // so look up which one it was.)
    let r = d.deliver_due(at(t0())).await.unwrap();
    assert_eq!(r.attempted, 2);
    let mut attempted = Vec::new();
    let mut waiting = Vec::new();
    for id in &down_ids {
        let m = d.message(id).await.unwrap();
        if m.attempts == 1 {
            attempted.push(m)
        } else {
            waiting.push(m)
        }
    }
    assert_eq!(attempted.len(), 1);
    let failed = d.list_attempts(&attempted[0].id).await.unwrap();
    let retry_at = failed[0].next_attempt_at.unwrap();
    assert_eq!(waiting.len(), 3);
    assert!(waiting
        .iter()
        .all(|m| m.attempts == 0 && m.next_attempt_at < retry_at));
    // Until then only the answering endpoint's messages are attempted, one per drain.
    for _ in 0..3 {
        let r = d.deliver_due(at(t0())).await.unwrap();
        assert_eq!(r.attempted, 1);
    }
    assert_eq!(d.deliver_due(at(t0())).await.unwrap().attempted, 0);
    assert_eq!(
        ctx.receiver.count(),
        4,
        "503s are retried per message, without backing off the others"
    );
    // Nothing of the down endpoint's is taken a moment before its retry time, though its queue is due.
    let before = retry_at - chrono::Duration::seconds(1);
    assert_eq!(d.deliver_due(at(before)).await.unwrap().attempted, 0);
    // At the retry time the down endpoint's queue is due again, one at a time (and the 503s' retries too).
    let r = d.deliver_due(at(retry_at)).await.unwrap();
    assert_eq!(r.attempted, 2);
    let mut down_attempts = 0;
    for id in &down_ids {
        down_attempts += d.message(id).await.unwrap().attempts;
    }
    assert_eq!(down_attempts, 2);
}

/// Every way of not reaching an endpoint — an attempt timeout, a failed TLS handshake, a failed DNS lookup,
/// a refused connection — backs off the endpoint's whole queue, not only the attempted message.
async fn endpoint_backoff_follows_timeouts_tls_and_dns_failures(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let hanging = Receiver::start(&ctx.ca, ReceiverOptions::default())
        .await
        .unwrap();
    hanging.set_default_reply(Reply::Hang);
    // Its certificate comes from a CA the dispatcher does not trust.
    let stranger = Receiver::start(&TestCa::new(), ReceiverOptions::default())
        .await
        .unwrap();
    ctx.resolver
        .insert("vanished.test", vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    let registrar = ctx.dispatcher();
    let (refused, _closed) = unreachable_endpoint(&registrar).await;
    let mut cases = vec![(refused, "connection failed")];
    for (url, error) in [
        (
            format!("https://{RECEIVER_HOST}:{}/", hanging.port()),
            "attempt timed out",
        ),
        (
            format!("https://{RECEIVER_HOST}:{}/", stranger.port()),
            "tls handshake failed",
        ),
        (
            format!("https://vanished.test:{}/", ctx.receiver.port()),
            "dns lookup failed",
        ),
    ] {
        let ep = registrar
            .register_endpoint(NewEndpoint::new("o", url))
            .await
            .unwrap();
        cases.push((ep.id, error));
    }
    // Deliveries resolve through a resolver that no longer knows vanished.test.
    let resolver = StaticResolver::new();
    resolver.insert(RECEIVER_HOST, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    let d = Dispatcher::builder(ctx.exec.clone())
        .resolver(Arc::new(resolver))
        .allow_net("127.0.0.1/32".parse().unwrap())
        .root_certificates(ctx.ca.root_store())
        .attempt_timeout(Duration::from_millis(500))
        .per_endpoint_concurrency(1)
        .secret_cipher(ctx.ring.clone())
        .build();
    let mut queues = Vec::new();
    for (ep, _) in &cases {
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(d.dispatch(NewMessage::new(ep, "a", i)).await.unwrap().message_id);
        }
        queues.push(ids);
    }
    let r = d.deliver_due(at(t0())).await.unwrap();
    assert_eq!(
        (r.attempted, r.retried),
        (4, 4),
        "one attempt per endpoint (cap 1)"
    );
    for ((_, error), ids) in cases.iter().zip(&queues) {
        let mut attempted = Vec::new();
        let mut waiting = Vec::new();
        for id in ids {
            let m = d.message(id).await.unwrap();
            if m.attempts == 1 {
                attempted.push(m)
            } else {
                waiting.push(m)
            }
        }
        assert_eq!(attempted.len(), 1, "{error}");
        let failed = &d.list_attempts(&attempted[0].id).await.unwrap()[0];
        assert_eq!(
            (failed.status_code, failed.error.as_deref()),
            (None, Some(*error))
        );
        let retry_at = failed.next_attempt_at.expect("retried");
        assert!(waiting.iter().all(|m| m.attempts == 0), "{error}");
        let before = retry_at - chrono::Duration::seconds(1);
        assert_eq!(
            d.deliver_due(at(before)).await.unwrap().attempted,
            0,
            "{error}: queue not backed off"
        );
    }
    assert_eq!(d.deliver_due(at(t0())).await.unwrap().attempted, 0);
}
