//! The database failing under a running delivery: claims and recordings that fail, and a LISTEN connection
//! that is lost and comes back. Nothing may be lost, recorded twice or left claimed.

use std::time::Duration;

use std::sync::Arc;

use webhooks_dispatch::store::Executor as _;
use webhooks_dispatch::{DeliverDue, Dispatcher, MessageState, NewMessage, Worker};
use webhooks_dispatch_testkit::proxy::TcpProxy;

use crate::conformance;
use crate::support::{
    bounded, listener, t0, CountingExecutor, Ctx, Engine, Exec, FaultyExecutor, ManualClock, RunningWorker,
};

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

// A lost LISTEN connection only exists on PostgreSQL (SQLite wakes workers in memory), so this runs on the two
// PostgreSQL adapters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_connection_lost_falls_back_to_polling_and_reconnects_sqlx() {
    let name = "listen_connection_lost_falls_back_to_polling_and_reconnects";
    bounded(name, Engine::Sqlx, listen_connection_lost(Engine::Sqlx)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_connection_lost_falls_back_to_polling_and_reconnects_tokio_postgres() {
    let name = "listen_connection_lost_falls_back_to_polling_and_reconnects";
    bounded(
        name,
        Engine::TokioPostgres,
        listen_connection_lost(Engine::TokioPostgres),
    )
    .await
}

/// The worker's poll interval here. A delivery within half of it, dispatched just after the worker went idle
/// (its next poll a full interval away), can only have come from a NOTIFY.
const POLL: Duration = Duration::from_secs(4);

/// The worker's database traffic is watched; only its LISTEN connection goes through the proxy.
struct ListenScene {
    ctx: Ctx,
    proxy: TcpProxy,
    watched: Arc<CountingExecutor<Exec>>,
    sender: Dispatcher<Exec>,
    endpoint: String,
    sent: usize,
}

impl ListenScene {
    /// Waits for the worker's next moment of idleness (it has just read when the next retry is due), then
    /// dispatches one message from another dispatcher, as from another process; true if it arrived within
    /// `within`.
    async fn idle_then_send(&mut self, within: Duration) -> bool {
        let next_due = self.watched.statements().next_due;
        let seen = self
            .watched
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| **s == next_due)
            .count();
        self.watched.wait_completed(next_due, seen + 1, POLL * 3).await;
        self.sender
            .dispatch(NewMessage::new(&self.endpoint, "a", self.sent))
            .await
            .unwrap();
        self.sent += 1;
        self.ctx.receiver.wait_for(self.sent, within).await
    }
}

async fn listen_connection_lost(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let proxy = TcpProxy::in_front_of(&ctx.db_url).await.unwrap();
    let d = ctx.dispatcher();
    let (endpoint, _) = ctx.endpoint(&d).await;
    let watched = CountingExecutor::new(ctx.exec.clone());
    let through_proxy = listener(engine, &proxy.via(&ctx.db_url)).await.unwrap();
    let worker = Worker::new(d.using(watched.clone()))
        .poll_interval(POLL)
        .listener(through_proxy);
    let running = RunningWorker::spawn(worker);
    // Every dispatch NOTIFYs: no debounce window can swallow one.
    let sender = ctx.builder().notify_debounce(Some(Duration::ZERO)).build();
    let mut scene = ListenScene {
        ctx,
        proxy,
        watched,
        sender,
        endpoint,
        sent: 0,
    };

    assert!(
        scene.idle_then_send(POLL / 2).await,
        "not woken by NOTIFY through the proxy"
    );

    // The LISTEN connection is lost (and cannot be reopened): deliveries go on, by polling.
    scene.proxy.cut();
    assert!(scene.proxy.wait_live(0, Duration::from_secs(10)).await);
    for _ in 0..2 {
        assert!(
            scene.idle_then_send(POLL * 2).await,
            "nothing delivered while the LISTEN connection was down: polling did not take over"
        );
    }

    // Back: the listener reconnects (within a few poll cycles: it retries once per poll interval) and NOTIFY
    // wakes the worker again. The reconnection is awaited first: a delivery that happened to fall on a poll
    // tick must not pass for a NOTIFY before the listener is even back. The new connection may still need a
    // moment before it LISTENs, so a few tries; a worker that never listens again only ever delivers at its
    // poll ticks and fails every one of them.
    scene.proxy.restore();
    assert!(
        scene.proxy.wait_live(1, POLL * 4).await,
        "the listener did not reconnect"
    );
    let mut woken = false;
    for _ in 0..5 {
        if scene.idle_then_send(POLL / 2).await {
            woken = true;
            break;
        }
        assert!(
            scene.ctx.receiver.wait_for(scene.sent, POLL * 2).await,
            "polling stopped"
        );
    }
    assert!(woken, "after the outage, NOTIFY never woke the worker again");
    assert!(
        scene.proxy.live_connections() >= 1,
        "the listener's connection did not stay up"
    );
    let report = running.stop().await;
    assert_eq!(report.deliveries.delivered as usize, scene.sent);
}
