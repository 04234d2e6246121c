//! Library input hardening: no setting or policy can panic, control characters are refused before any SQL,
//! endpoint URLs are stored exactly as vetted (normalized), registration's DNS lookups are bounded in time and
//! in number, and an HTTP/2 receiver cannot make an attempt buffer more than a few times what it reads.

use std::time::Duration;

use chrono::Utc;
use webhooks_dispatch::{DeliverDue, NewMessage, RetryPolicy, Worker};
use webhooks_dispatch_testkit::receiver::Reply;

use crate::conformance;
use crate::support::{Ctx, Engine, RunningWorker};

conformance!(huge_durations_never_panic_a_drain_or_a_worker,);

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
