use std::collections::HashMap;
use std::time::Duration;

use webhooks_dispatch::store::Executor as _;
use webhooks_dispatch::{DeliverDue, Dispatcher, MessageState, NewEndpoint, NewMessage, Worker};
use webhooks_dispatch_testkit::receiver::Reply;

use crate::conformance;
use crate::support::{listener, CountingExecutor, Ctx, Engine, Exec, RunningWorker};

conformance!(
    concurrent_drains_deliver_each_message_exactly_once,
    two_workers_deliver_each_message_exactly_once,
    aborted_drain_leaves_every_message_deliverable_after_the_lease,
    graceful_shutdown_leaves_no_message_claimed,
    stale_drain_cannot_overwrite_a_newer_outcome,
    per_endpoint_cap_holds_and_a_hanging_endpoint_does_not_starve_others,
    worker_wakes_on_notify_and_only_after_commit,
    worker_sleeps_until_the_next_due_retry,
    worker_keeps_a_single_busy_endpoint_flowing_without_polling,
    global_concurrency_cap_is_used_and_never_exceeded,
);

const LEASED: &str = "SELECT count(*) FROM webhooks_dispatch_outbox WHERE lease_token IS NOT NULL";
const ATTEMPTS: &str = "SELECT count(*) FROM webhooks_dispatch_attempts";
const DISTINCT_ATTEMPTS: &str =
    "SELECT count(*) FROM (SELECT DISTINCT message_id, attempt_no FROM webhooks_dispatch_attempts) AS d";
const DELIVERED: &str = "SELECT count(*) FROM webhooks_dispatch_outbox WHERE status = 'delivered'";

/// Registers `endpoints` endpoints on the receiver (distinct paths) and enqueues `n` messages round-robin.
async fn enqueue(ctx: &Ctx, d: &Dispatcher<Exec>, endpoints: usize, n: usize) -> Vec<String> {
    let mut eps = Vec::new();
    for e in 0..endpoints {
        let url = format!("https://receiver.test:{}/e{e}", ctx.receiver.port());
        eps.push(d.register_endpoint(NewEndpoint::new("o", url)).await.unwrap().id);
    }
    let mut ids = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let msgs = chunk
            .iter()
            .map(|i| NewMessage::new(&eps[i % endpoints], "a", *i))
            .collect();
        ids.extend(
            d.dispatch_many(msgs)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.message_id),
        );
    }
    ids
}

/// Asserts every message reached the receiver exactly once and no attempt number repeated.
async fn assert_exactly_once(ctx: &Ctx, ids: &[String]) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in ctx.receiver.received() {
        *seen
            .entry(r.headers["webhook-id"].to_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), ids.len(), "some message was never delivered");
    assert!(seen.values().all(|&c| c == 1), "a message was delivered twice");
    assert_eq!(ctx.scalar(ATTEMPTS, &[]).await, ids.len() as i64);
    assert_eq!(ctx.scalar(DISTINCT_ATTEMPTS, &[]).await, ids.len() as i64);
    assert_eq!(ctx.scalar(DELIVERED, &[]).await, ids.len() as i64);
}

async fn concurrent_drains_deliver_each_message_exactly_once(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    // Two independently configured dispatchers stand for two processes.
    let a = ctx.dispatcher();
    let b = ctx.dispatcher();
    let ids = enqueue(&ctx, &a, 20, 1000).await;
    loop {
        let opts = DeliverDue {
            now: None,
            batch: Some(100),
        };
        let (ra, rb) = tokio::join!(a.deliver_due(opts), b.deliver_due(opts));
        if ra.unwrap().attempted + rb.unwrap().attempted == 0 {
            break;
        }
    }
    assert_exactly_once(&ctx, &ids).await;
}

async fn two_workers_deliver_each_message_exactly_once(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let ids = enqueue(&ctx, &d, 20, 1000).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let worker = Worker::new(ctx.dispatcher()).claim_batch(50);
            let mut stop = stop_rx.clone();
            tokio::spawn(worker.run(async move {
                let _ = stop.wait_for(|s| *s).await;
            }))
        })
        .collect();
    assert!(
        ctx.receiver.wait_for(1000, Duration::from_secs(60)).await,
        "not all delivered"
    );
    stop_tx.send(true).unwrap();
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap().unwrap().deliveries.delivered;
    }
    assert_eq!(total, 1000);
    assert_exactly_once(&ctx, &ids).await;
    assert_eq!(ctx.scalar(LEASED, &[]).await, 0);
}

async fn aborted_drain_leaves_every_message_deliverable_after_the_lease(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.builder().concurrency(10).build();
    let ids = enqueue(&ctx, &d, 5, 50).await;
    ctx.receiver
        .set_default_reply(Reply::Delayed(Duration::from_millis(400)));
    let now = chrono::Utc::now();
    let drain = {
        let d = d.clone();
        tokio::spawn(async move {
            d.deliver_due(DeliverDue {
                now: Some(now),
                batch: Some(100),
            })
            .await
        })
    };
    assert!(ctx.receiver.wait_for(1, Duration::from_secs(10)).await);
    drain.abort(); // the worker dies mid-batch
    let _ = drain.await;
    for id in &ids {
        let m = d.message(id).await.unwrap();
        assert_eq!(
            (m.state, m.attempts),
            (MessageState::Pending, 0),
            "nothing recorded by the dead drain"
        );
    }
    assert!(ctx.scalar(LEASED, &[]).await > 0);
    // Within the lease, nobody else takes them ...
    let r = d
        .deliver_due(DeliverDue {
            now: Some(now + chrono::Duration::seconds(5)),
            batch: Some(100),
        })
        .await
        .unwrap();
    assert_eq!(
        r.attempted, 0,
        "a leased message was attempted twice concurrently"
    );
    // ... after it, all of them are delivered: none stuck, none lost.
    ctx.receiver.set_default_reply(Reply::status(200));
    let later = now + chrono::Duration::hours(1);
    while d
        .deliver_due(DeliverDue {
            now: Some(later),
            batch: Some(1000),
        })
        .await
        .unwrap()
        .attempted
        > 0
    {}
    for id in &ids {
        assert_eq!(d.message(id).await.unwrap().state, MessageState::Delivered);
        assert_eq!(d.list_attempts(id).await.unwrap().len(), 1);
    }
    assert_eq!(ctx.scalar(LEASED, &[]).await, 0);
}

async fn graceful_shutdown_leaves_no_message_claimed(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    // One owner and host: their caps raised to the concurrency, so 8 attempts hang at once.
    let d = ctx
        .builder()
        .concurrency(8)
        .per_owner_concurrency(8)
        .per_host_concurrency(8)
        .build();
    let ids = enqueue(&ctx, &d, 8, 40).await;
    // First: attempts outlive the grace period, so they are aborted and released.
    ctx.receiver.set_default_reply(Reply::Hang);
    let worker = Worker::new(d.clone()).shutdown_grace(Duration::from_millis(200));
    let running = RunningWorker::spawn(worker);
    assert!(ctx.receiver.wait_for(8, Duration::from_secs(10)).await);
    let report = running.stop().await;
    // The 8 hanging attempts, plus the 32 claimed ahead and waiting for a slot: none was finished.
    assert_eq!(report.released, 40, "{report:?}");
    assert_eq!(report.deliveries.attempted, 0);
    assert_eq!(ctx.scalar(LEASED, &[]).await, 0, "shutdown left messages claimed");
    // Released messages are due at once, not after a lease.
    ctx.receiver
        .set_default_reply(Reply::Delayed(Duration::from_millis(50)));
    let worker = Worker::new(d.clone()).shutdown_grace(Duration::from_secs(30));
    let running = RunningWorker::spawn(worker);
    assert!(ctx.receiver.wait_for(8 + 20, Duration::from_secs(20)).await);
    // Second: stopping mid-flight with a long grace lets every in-flight attempt finish and be recorded; what
    // was claimed ahead but not started is handed back rather than started during shutdown.
    let report = running.stop().await;
    assert!(report.deliveries.attempted >= 20, "{report:?}");
    assert_eq!(ctx.scalar(LEASED, &[]).await, 0);
    let recorded = ctx.scalar(ATTEMPTS, &[]).await as u64;
    assert_eq!(
        recorded, report.deliveries.attempted,
        "every finished attempt was recorded"
    );
    let _ = ids;
}

async fn stale_drain_cannot_overwrite_a_newer_outcome(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let slow = ctx.dispatcher();
    let fresh = ctx.dispatcher();
    let (ep, _) = ctx.endpoint(&slow).await;
    let id = slow
        .dispatch(NewMessage::new(&ep, "a", 1))
        .await
        .unwrap()
        .message_id;
    ctx.receiver
        .push_replies([Reply::Delayed(Duration::from_millis(1500))]);
    let now = chrono::Utc::now();
    let stale = tokio::spawn(async move {
        slow.deliver_due(DeliverDue {
            now: Some(now),
            batch: None,
        })
        .await
    });
    assert!(ctx.receiver.wait_for(1, Duration::from_secs(10)).await);
    // Far past the stale drain's lease, another drain takes the message over and delivers it.
    let later = now + chrono::Duration::days(1);
    let r = fresh
        .deliver_due(DeliverDue {
            now: Some(later),
            batch: None,
        })
        .await
        .unwrap();
    assert_eq!(r.delivered, 1);
    // The stale drain's late result is refused: nothing recorded, nothing changed.
    let stale_report = stale.await.unwrap().unwrap();
    assert_eq!(stale_report.attempted, 0, "{stale_report:?}");
    let attempts = fresh.list_attempts(&id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status_code, Some(200));
    assert_eq!(fresh.message(&id).await.unwrap().state, MessageState::Delivered);
}

async fn per_endpoint_cap_holds_and_a_hanging_endpoint_does_not_starve_others(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let hanging = webhooks_dispatch_testkit::receiver::Receiver::start(&ctx.ca, Default::default())
        .await
        .unwrap();
    hanging.set_default_reply(Reply::Hang);
    let d = ctx
        .builder()
        .concurrency(8)
        .per_endpoint_concurrency(2)
        .attempt_timeout(Duration::from_secs(2))
        .build();
    ctx.receiver
        .set_default_reply(Reply::Delayed(Duration::from_millis(100)));
    let mut healthy = Vec::new();
    for path in ["a", "b"] {
        let url = format!("https://receiver.test:{}/{path}", ctx.receiver.port());
        healthy.push(d.register_endpoint(NewEndpoint::new("o", url)).await.unwrap().id);
    }
    let slow_url = format!("https://receiver.test:{}/slow", hanging.port());
    let slow = d
        .register_endpoint(NewEndpoint::new("o", slow_url))
        .await
        .unwrap()
        .id;
    // The hanging endpoint's backlog is enqueued first, so a FIFO claim would be all hanging work.
    for i in 0..20 {
        d.dispatch(NewMessage::new(&slow, "a", i)).await.unwrap();
    }
    for i in 0..20 {
        for ep in &healthy {
            d.dispatch(NewMessage::new(ep, "a", i)).await.unwrap();
        }
    }
    let started = std::time::Instant::now();
    let running = RunningWorker::spawn(Worker::new(d.clone()).shutdown_grace(Duration::ZERO));
    // 40 healthy deliveries finish long before the 20 hanging ones could (2 at a time × 2 s each = 20 s).
    assert!(
        ctx.receiver.wait_for(40, Duration::from_secs(15)).await,
        "healthy endpoints starved"
    );
    // Each hanging attempt holds one of the endpoint's 2 slots for its full 2 s deadline, so by now at most 2
    // per started 2 s have begun; without the cap on that endpoint, all 8 global slots would have gone there.
    let hanging_bound = 2 * (started.elapsed().as_secs() / 2 + 1) as usize;
    assert!(
        hanging.count() <= hanging_bound,
        "the hanging endpoint got {} attempts, more than its cap allows ({hanging_bound})",
        hanging.count()
    );
    running.stop().await;
    for path in ["/a", "/b"] {
        assert_eq!(
            ctx.receiver.max_in_flight_for(path),
            2,
            "cap not used or exceeded on {path}"
        );
    }
    // (The hanging receiver's own in-flight count is not asserted: after a timeout the client resets the
    // HTTP/2 stream and moves on, and the server notices the reset a moment later, so its view lags.)
    assert!(
        hanging.count() >= 2,
        "the hanging endpoint got its share of attempts"
    );
    assert!(
        ctx.receiver.max_in_flight() > 2,
        "the cap must be per endpoint, not global"
    );
}

async fn worker_wakes_on_notify_and_only_after_commit(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let (ep, _) = ctx.endpoint(&d).await;
    // The worker's statements are watched, so the test knows when it has gone idle.
    let watched = CountingExecutor::new(ctx.exec.clone());
    // Polling is effectively off: only a wake-up can bring this worker to claim.
    let mut worker = Worker::new(d.using(watched.clone())).poll_interval(Duration::from_secs(3600));
    if let Some(listener) = listener(engine, &ctx.db_url).await {
        worker = worker.listener(listener);
    }
    let running = RunningWorker::spawn(worker);
    // On PostgreSQL the dispatch comes from a separately configured dispatcher, as from another process, so
    // only the NOTIFY through the database can wake the worker (sent on every dispatch: no debounce window
    // can swallow the second one); SQLite serves one process, where the in-memory wake-up is the mechanism.
    let sender = match engine {
        Engine::Sqlite => d.clone(),
        _ => ctx.builder().notify_debounce(Some(Duration::ZERO)).build(),
    };
    // Idle: its first claim found nothing and it has read when the next retry is due, so from here on only a
    // wake-up makes it claim again.
    watched
        .wait_completed(watched.statements().next_due, 1, Duration::from_secs(10))
        .await;
    sender.dispatch(NewMessage::new(&ep, "a", 1)).await.unwrap();
    assert!(
        ctx.receiver.wait_for(1, Duration::from_secs(10)).await,
        "the dispatch did not wake the worker"
    );

    // Inside a transaction: the NOTIFY goes out at commit, together with the row.
    match engine {
        Engine::Sqlx => {
            let pool = sqlx::PgPool::connect(&ctx.db_url).await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            {
                let conn = webhooks_dispatch::store::sqlx::SqlxConnection::new(&mut tx);
                sender
                    .using(&conn)
                    .dispatch(NewMessage::new(&ep, "a", 2))
                    .await
                    .unwrap();
            }
            assert!(
                !ctx.receiver.wait_for(2, Duration::from_millis(300)).await,
                "delivered before commit"
            );
            tx.commit().await.unwrap();
        }
        Engine::TokioPostgres => {
            let (mut client, conn) = tokio_postgres::connect(&ctx.db_url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let tx = client.transaction().await.unwrap();
            sender
                .using(&tx)
                .dispatch(NewMessage::new(&ep, "a", 2))
                .await
                .unwrap();
            assert!(
                !ctx.receiver.wait_for(2, Duration::from_millis(300)).await,
                "delivered before commit"
            );
            tx.commit().await.unwrap();
        }
        // No caller transactions through this adapter; a second plain dispatch.
        Engine::Sqlite => {
            sender.dispatch(NewMessage::new(&ep, "a", 2)).await.unwrap();
        }
    }
    assert!(
        ctx.receiver.wait_for(2, Duration::from_secs(10)).await,
        "the second dispatch did not wake the worker"
    );
    let report = running.stop().await;
    assert_eq!(report.deliveries.delivered, 2);
}

async fn worker_sleeps_until_the_next_due_retry(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let (ep, _) = ctx.endpoint(&d).await;
    ctx.receiver.push_replies([Reply::Status {
        status: 503,
        headers: vec![("retry-after".into(), "1".into())],
        body: vec![],
    }]);
    d.dispatch(NewMessage::new(&ep, "a", 1)).await.unwrap();
    let worker = Worker::new(d.clone()).poll_interval(Duration::from_secs(3600));
    let running = RunningWorker::spawn(worker);
    // With polling off, only the scheduled retry time can bring the second attempt.
    assert!(
        ctx.receiver.wait_for(2, Duration::from_secs(15)).await,
        "the retry was never attempted"
    );
    let report = running.stop().await;
    assert_eq!((report.deliveries.retried, report.deliveries.delivered), (1, 1));
}

async fn worker_keeps_a_single_busy_endpoint_flowing_without_polling(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    // One endpoint with a backlog far above its cap: claims come back short (capped per endpoint) or empty
    // (endpoint skipped at its cap), yet finished attempts must trigger the next claim without any poll.
    let d = ctx.builder().per_endpoint_concurrency(4).build();
    let ids = enqueue(&ctx, &d, 1, 200).await;
    let worker = Worker::new(d.clone()).poll_interval(Duration::from_secs(3600));
    let running = RunningWorker::spawn(worker);
    assert!(
        ctx.receiver.wait_for(200, Duration::from_secs(30)).await,
        "the backlog stalled"
    );
    running.stop().await;
    assert!(ctx.receiver.max_in_flight_for("/e0") <= 4);
    assert_exactly_once(&ctx, &ids).await;
}

/// `concurrency` bounds attempts in flight across all endpoints, for a worker and for `deliver_due`, while
/// the per-endpoint cap (default 16) would allow far more. (The endpoints share one owner and one host, whose
/// caps default to half the concurrency: raised here so that only the global cap binds.)
async fn global_concurrency_cap_is_used_and_never_exceeded(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    ctx.receiver
        .set_default_reply(Reply::Delayed(Duration::from_millis(100)));
    let d = ctx
        .builder()
        .concurrency(4)
        .per_owner_concurrency(4)
        .per_host_concurrency(4)
        .build();
    let ids = enqueue(&ctx, &d, 8, 40).await;
    let running = RunningWorker::spawn(Worker::new(d.clone()));
    assert!(
        ctx.receiver.wait_for(40, Duration::from_secs(30)).await,
        "not all delivered"
    );
    running.stop().await;
    assert_exactly_once(&ctx, &ids).await;
    assert_eq!(
        ctx.receiver.max_in_flight(),
        4,
        "worker: cap not used or exceeded"
    );

    enqueue(&ctx, &d, 8, 40).await;
    let report = d
        .deliver_due(DeliverDue {
            now: None,
            batch: Some(40),
        })
        .await
        .unwrap();
    assert_eq!(report.delivered, 40);
    assert_eq!(ctx.receiver.count(), 80);
    assert_eq!(ctx.receiver.max_in_flight(), 4, "deliver_due: cap exceeded");
}
