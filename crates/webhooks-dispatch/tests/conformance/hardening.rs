//! Library input hardening: no setting or policy can panic, control characters are refused before any SQL,
//! endpoint URLs are stored exactly as vetted (normalized), registration's DNS lookups are bounded in time and
//! in number, and an HTTP/2 receiver cannot make an attempt buffer more than a few times what it reads.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use webhooks_dispatch::{DeliverDue, NewEndpoint, NewMessage, RetryPolicy, UpdateEndpoint, Worker};
use webhooks_dispatch_testkit::receiver::Reply;

use crate::conformance;
use crate::support::{CountingExecutor, Ctx, Engine, RunningWorker, RECEIVER_HOST};

mod h2_windows;
mod lookups;

conformance!(
    huge_durations_never_panic_a_drain_or_a_worker,
    control_characters_in_urls_and_owner_ids_are_refused_before_any_sql,
    endpoint_urls_are_stored_as_normalized_by_the_vetting_parser,
);

/// Every duration a caller can hand the builder or the retry policy, at its most extreme. Before the clamps a
/// drain panicked computing its lease (`Duration + Duration`), an attempt its deadline (`Instant + d`), a
/// retry its next attempt time (`DateTime + chrono::Duration::MAX`), and a worker its lease and its catch-up
/// claim after a wake-up.
async fn huge_durations_never_panic_a_drain_or_a_worker(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    ctx.receiver.set_default_reply(Reply::status(500));
    let huge = RetryPolicy {
        max_attempts: u32::MAX,
        base_delay: Duration::MAX,
        max_delay: Duration::MAX,
    };
    let d = ctx
        .builder()
        .attempt_timeout(Duration::MAX)
        .dns_cache_ttl(Duration::MAX)
        .pool_idle_timeout(Duration::MAX)
        .notify_debounce(Some(Duration::MAX))
        .disable_failing_after(Some(Duration::MAX))
        .retry_policy(huge)
        .build();
    let (ep, _) = ctx.endpoint(&d).await;
    let id = d.dispatch(NewMessage::new(&ep, "a", 1)).await.unwrap().message_id;
    let report = d.deliver_due(DeliverDue::default()).await.unwrap();
    assert_eq!((report.attempted, report.retried), (1, 1), "{report:?}");
    let retry_in = d.message(&id).await.unwrap().next_attempt_at - Utc::now();
    let cap = chrono::Duration::from_std(webhooks_dispatch::retry::MAX_RETRY_DELAY).unwrap();
    assert!(
        retry_in <= cap,
        "next attempt in {retry_in}, beyond the documented cap"
    );
    assert!(
        retry_in > cap - chrono::Duration::minutes(5),
        "next attempt in {retry_in}"
    );

    // The worker computes its own lease and wake-ups from the same settings; a dispatch wakes it.
    let worker = RunningWorker::spawn(Worker::new(d.clone()).poll_interval(Duration::from_millis(20)));
    d.dispatch(NewMessage::new(&ep, "a", 2)).await.unwrap();
    assert!(
        ctx.receiver.wait_for(2, Duration::from_secs(20)).await,
        "the worker delivered nothing"
    );
    let report = worker.stop().await;
    assert_eq!(report.deliveries.attempted, 1, "{report:?}");
}

/// Raw control characters (C0, DEL, C1) and bidirectional overrides in a URL or an owner id: the URL parser
/// would silently drop some and percent-encode others, and the raw text would reach operators' terminals.
async fn control_characters_in_urls_and_owner_ids_are_refused_before_any_sql(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let plain = ctx.dispatcher();
    let (ep, _) = ctx.endpoint(&plain).await;
    let exec = CountingExecutor::new(ctx.exec.clone());
    let d = plain.using(exec.clone());
    let port = ctx.receiver.port();
    let urls = [
        format!("https://{RECEIVER_HOST}:{port}/ho\u{7}ok"),
        format!("https://{RECEIVER_HOST}:{port}/hook\n"),
        format!("\thttps://{RECEIVER_HOST}:{port}/hook"),
        format!("https://{RECEIVER_HOST}:{port}/hook?a=\u{1b}[31m"),
        format!("https://{RECEIVER_HOST}:{port}/hook?\u{7f}"),
        format!("https://{RECEIVER_HOST}:{port}/\u{9b}31m"),
        format!("https://{RECEIVER_HOST}:{port}/\u{202e}kooh"),
        format!("https://rece\u{0}iver.test:{port}/hook"),
    ];
    for url in &urls {
        let err = d.register_endpoint(NewEndpoint::new("o", url)).await.unwrap_err();
        assert_eq!(err.code(), "invalid_url", "{url:?}: {err}");
        let update = UpdateEndpoint {
            url: Some(url.clone()),
            ..UpdateEndpoint::default()
        };
        let err = d.update_endpoint(&ep, update).await.unwrap_err();
        assert_eq!(err.code(), "invalid_url", "{url:?}: {err}");
    }
    for owner in [
        "o\u{7}",
        "o\n",
        "\u{1b}[2Jo",
        "o\u{7f}",
        "o\u{85}",
        "o\u{202e}",
        "o\u{2066}x",
    ] {
        let err = d
            .register_endpoint(NewEndpoint::new(owner, ctx.url()))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.http_status()),
            ("invalid_input", 400),
            "{owner:?}: {err}"
        );
        let filter = webhooks_dispatch::ListEndpoints {
            owner_id: Some(owner.to_owned()),
            ..Default::default()
        };
        let err = d.list_endpoints(filter).await.unwrap_err();
        assert_eq!(err.code(), "invalid_input", "{owner:?}: {err}");
        let event = webhooks_dispatch::NewEvent::new(owner, "a", 1);
        let err = d.dispatch_event(event).await.unwrap_err();
        assert_eq!(err.code(), "invalid_input", "{owner:?}: {err}");
    }
    assert_eq!(exec.count(), 0, "a refused input reached the database");
    // Letters from any script stay welcome.
    d.register_endpoint(NewEndpoint::new("Zoë — 客户", ctx.url()))
        .await
        .expect("a printable owner id");
}

/// What is stored (and shown, and delivered to) is the parser's serialization of the URL that was vetted, not
/// the caller's spelling of it.
async fn endpoint_urls_are_stored_as_normalized_by_the_vetting_parser(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let port = ctx.receiver.port();
    let cases = [
        (
            format!("HTTPS://Receiver.TEST:{port}/a/../hook"),
            format!("https://receiver.test:{port}/hook"),
        ),
        (
            format!("https://{RECEIVER_HOST}:443/x/./y"),
            format!("https://{RECEIVER_HOST}/x/y"),
        ),
        (
            format!("https://{RECEIVER_HOST}:{port}/caf\u{e9} ok?q=a b"),
            format!("https://{RECEIVER_HOST}:{port}/caf%C3%A9%20ok?q=a%20b"),
        ),
        (
            format!("https://{RECEIVER_HOST}"),
            format!("https://{RECEIVER_HOST}/"),
        ),
    ];
    for (input, stored) in &cases {
        let ep = d
            .register_endpoint(NewEndpoint::new("o", input))
            .await
            .unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(
            &d.endpoint(&ep.id).await.unwrap().url,
            stored,
            "registered as {input}"
        );
        let update = UpdateEndpoint {
            url: Some(input.clone()),
            ..UpdateEndpoint::default()
        };
        assert_eq!(
            &d.update_endpoint(&ep.id, update).await.unwrap().url,
            stored,
            "updated to {input}"
        );
    }
    // And delivery goes where the stored form says.
    let ep = d
        .register_endpoint(NewEndpoint::new(
            "o",
            format!("https://RECEIVER.test:{port}/x/../hook"),
        ))
        .await
        .unwrap();
    d.dispatch(NewMessage::new(&ep.id, "a", 1)).await.unwrap();
    let report = d.deliver_due(DeliverDue::default()).await.unwrap();
    assert_eq!(report.delivered, 1, "{report:?}");
    assert_eq!(ctx.receiver.received()[0].path, "/hook");
}

/// An `Arc` of anything, as the builder's resolver setter wants it.
fn shared<T>(value: T) -> Arc<T> {
    Arc::new(value)
}
