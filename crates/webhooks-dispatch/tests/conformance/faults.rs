//! The database failing under a running delivery: claims and recordings that fail, and a LISTEN connection
//! that is lost and comes back. Nothing may be lost, recorded twice or left claimed.

use std::time::Duration;

use webhooks_dispatch::store::Executor as _;
use webhooks_dispatch::{DeliverDue, MessageState, NewMessage, Worker};

use crate::conformance;
use crate::support::{t0, Ctx, Engine, FaultyExecutor, ManualClock, RunningWorker};

conformance!(
    storage_failure_while_recording_is_retried_and_recorded_once,
    unrecordable_result_keeps_its_lease_and_the_message_is_delivered_again,
    claim_failures_do_not_stop_the_worker,
);

const LEASED: &str = "SELECT count(*) FROM webhooks_dispatch_outbox WHERE lease_token IS NOT NULL";
const ATTEMPTS: &str = "SELECT count(*) FROM webhooks_dispatch_attempts";

/// The worker's recorder retries a failed bulk write with backoff: the outcome lands once, the message is
/// delivered once.
async fn storage_failure_while_recording_is_retried_and_recorded_once(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let faulty = FaultyExecutor::new(ctx.exec.clone());
    let d = ctx.dispatcher().using(faulty.clone());
    let (ep, _) = ctx.endpoint(&d).await;
    faulty.fail_next(faulty.statements().complete_attempts, 3);
    let id = d.dispatch(NewMessage::new(&ep, "a", 1)).await.unwrap().message_id;
    let running = RunningWorker::spawn(Worker::new(d.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while d.message(&id).await.unwrap().state != MessageState::Delivered {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outcome was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = running.stop().await;
    assert_eq!(faulty.refused(), 3, "the failures were injected");
    assert_eq!(report.deliveries.delivered, 1, "{report:?}");
    assert_eq!(ctx.receiver.count(), 1, "delivered once");
    assert_eq!(ctx.scalar(ATTEMPTS, &[]).await, 1, "recorded once");
    assert_eq!(ctx.scalar(LEASED, &[]).await, 0);
}

/// A drain that cannot record its results reports the storage error; the messages stay pending under their
/// lease (not lost, not marked attempted), and after the lease they are delivered again with the same
/// `webhook-id`, so the receiver can deduplicate.
async fn unrecordable_result_keeps_its_lease_and_the_message_is_delivered_again(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let faulty = FaultyExecutor::new(ctx.exec.clone());
    let d = ctx
        .builder()
        .clock(ManualClock::at(t0()))
        .build()
        .using(faulty.clone());
    let (ep, _) = ctx.endpoint(&d).await;
    let id = d.dispatch(NewMessage::new(&ep, "a", 1)).await.unwrap().message_id;
    faulty.fail_next(faulty.statements().complete_attempts, usize::MAX);
    let err = d.deliver_due(DeliverDue::default()).await.unwrap_err();
    assert_eq!(
        (err.code(), err.to_string().as_str()),
        ("storage", "storage error")
    );
    let m = d.message(&id).await.unwrap();
    assert_eq!((m.state, m.attempts), (MessageState::Pending, 0));
    assert_eq!(ctx.scalar(LEASED, &[]).await, 1, "the lease is kept");
    // Within the lease nobody takes it, even once the database is healthy again.
    faulty.fail_next(faulty.statements().complete_attempts, 0);
    let r = d
        .deliver_due(DeliverDue {
            now: Some(t0() + chrono::Duration::seconds(30)),
            batch: None,
        })
        .await
        .unwrap();
    assert_eq!(r.attempted, 0);
    let r = d
        .deliver_due(DeliverDue {
            now: Some(t0() + chrono::Duration::hours(1)),
            batch: None,
        })
        .await
        .unwrap();
    assert_eq!(r.delivered, 1);
    let got = ctx.receiver.received();
    assert_eq!(got.len(), 2, "at least once: delivered again after the lease");
    assert!(got.iter().all(|r| r.headers["webhook-id"] == id.as_str()));
    let attempts = d.list_attempts(&id).await.unwrap();
    assert_eq!(attempts.len(), 1, "only the recorded attempt is in the log");
    assert_eq!(attempts[0].attempt_no, 1);
    assert_eq!(ctx.scalar(LEASED, &[]).await, 0);
}

/// A failing claim is logged and retried after the poll interval; the worker keeps running.
async fn claim_failures_do_not_stop_the_worker(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let faulty = FaultyExecutor::new(ctx.exec.clone());
    let d = ctx.dispatcher().using(faulty.clone());
    let (ep, _) = ctx.endpoint(&d).await;
    faulty.fail_next(faulty.statements().claim_due, 3);
    d.dispatch(NewMessage::new(&ep, "a", 1)).await.unwrap();
    let running = RunningWorker::spawn(Worker::new(d.clone()).poll_interval(Duration::from_millis(100)));
    assert!(
        ctx.receiver.wait_for(1, Duration::from_secs(20)).await,
        "the worker gave up after failed claims"
    );
    let report = running.stop().await;
    assert_eq!(faulty.refused(), 3);
    assert_eq!(report.deliveries.delivered, 1);
}
