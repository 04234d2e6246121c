//! Short worker leases kept alive by renewal: a healthy worker's slow attempt is never taken over, even by a
//! second worker polling the same database, and a worker that stops renewing without releasing anything (its
//! task aborted, as in a crash) has its messages taken over by another within about one lease.

use std::time::{Duration, Instant};

use webhooks_dispatch::store::Executor as _;
use webhooks_dispatch::{Dispatcher, MessageState, NewMessage, Worker};
use webhooks_dispatch_testkit::receiver::Reply;

use crate::conformance;
use crate::support::{Ctx, Engine, Exec, FaultyExecutor, RunningWorker};

conformance!(
    a_healthy_attempt_longer_than_the_lease_is_never_taken_over,
    leases_are_renewed_through_the_shutdown_grace,
    a_worker_that_stops_renewing_has_its_messages_taken_over_within_about_the_lease,
    a_lease_lost_while_renewals_failed_is_not_attempted_again_and_its_late_result_is_refused,
    a_message_a_worker_claims_back_after_its_own_lease_lapsed_is_attempted_once_more_not_twice,
);

const LEASED: &str = "SELECT count(*) FROM webhooks_dispatch_outbox WHERE lease_token IS NOT NULL";
const ATTEMPTS: &str = "SELECT count(*) FROM webhooks_dispatch_attempts";
const LEASE: Duration = Duration::from_secs(1);

/// A worker with a one-second lease that looks at the table every 100 ms, so it would take over any lease
/// that lapsed almost at once.
fn eager_worker(d: Dispatcher<Exec>) -> Worker<Exec> {
    Worker::new(d)
        .lease(LEASE)
        .poll_interval(Duration::from_millis(100))
}

async fn enqueue(ctx: &Ctx, d: &Dispatcher<Exec>, n: usize) -> Vec<String> {
    let (ep, _) = ctx.endpoint(d).await;
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(d.dispatch(NewMessage::new(&ep, "a", i)).await.unwrap().message_id);
    }
    ids
}

/// Each message delivered, one attempt recorded for it, nothing left leased.
async fn assert_each_delivered_with_one_attempt(ctx: &Ctx, d: &Dispatcher<Exec>, ids: &[String]) {
    for id in ids {
        assert_eq!(d.message(id).await.unwrap().state, MessageState::Delivered);
        assert_eq!(d.list_attempts(id).await.unwrap().len(), 1, "{id}");
    }
    assert_eq!(ctx.scalar(ATTEMPTS, &[]).await, ids.len() as i64);
    assert_eq!(ctx.scalar(LEASED, &[]).await, 0);
}

// Catches: a short lease that is not renewed while its attempt runs (the second worker would take the
// message over after one second and deliver it again).
async fn a_healthy_attempt_longer_than_the_lease_is_never_taken_over(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    // Answered after three leases; well inside the 5 s attempt timeout.
    ctx.receiver.set_default_reply(Reply::Delayed(3 * LEASE));
    let a = ctx.dispatcher();
    let ids = enqueue(&ctx, &a, 3).await;
    let first = RunningWorker::spawn(eager_worker(a.clone()));
    assert!(ctx.receiver.wait_for(3, Duration::from_secs(10)).await);
    // Another process's worker on the same database, looking every 100 ms while the attempts run.
    let second = RunningWorker::spawn(eager_worker(ctx.dispatcher()));
    let deadline = Instant::now() + Duration::from_secs(20);
    for id in &ids {
        while a.message(id).await.unwrap().state != MessageState::Delivered {
            assert!(Instant::now() < deadline, "{id} never delivered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Past the point where an unrenewed lease would long have lapsed and been taken.
    tokio::time::sleep(LEASE).await;
    let (first, second) = (first.stop().await, second.stop().await);
    assert_eq!(first.deliveries.delivered, 3, "{first:?}");
    assert_eq!(second.deliveries.attempted, 0, "{second:?}");
    assert_eq!(ctx.receiver.count(), 3, "a message was taken over and sent again");
    assert_eq!(first.discarded, 0);
    assert_each_delivered_with_one_attempt(&ctx, &a, &ids).await;
}

// Catches: renewal that stops when shutdown is requested, while in-flight attempts still get a grace period
// longer than the lease (the service's defaults: 15 s grace, 10 s lease).
async fn leases_are_renewed_through_the_shutdown_grace(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    ctx.receiver.set_default_reply(Reply::Delayed(3 * LEASE));
    let a = ctx.dispatcher();
    let ids = enqueue(&ctx, &a, 2).await;
    let first = RunningWorker::spawn(eager_worker(a.clone()).shutdown_grace(Duration::from_secs(10)));
    assert!(ctx.receiver.wait_for(2, Duration::from_secs(10)).await);
    let second = RunningWorker::spawn(eager_worker(ctx.dispatcher()));
    // The first worker stops claiming and waits for its two attempts, renewing their leases meanwhile.
    let first = first.stop().await;
    assert_eq!((first.deliveries.delivered, first.released), (2, 0), "{first:?}");
    let second = second.stop().await;
    assert_eq!(second.deliveries.attempted, 0, "{second:?}");
    assert_eq!(ctx.receiver.count(), 2, "taken over during the grace period");
    assert_each_delivered_with_one_attempt(&ctx, &a, &ids).await;
}

// Catches: a lease that stays long (the old worst-case lease was 70 s with these settings), and renewal that
// outlives the worker it belongs to (a dropped worker's messages would then never come back).
async fn a_worker_that_stops_renewing_has_its_messages_taken_over_within_about_the_lease(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    ctx.receiver.set_default_reply(Reply::Hang);
    let a = ctx.dispatcher();
    let ids = enqueue(&ctx, &a, 5).await;
    let crashed = tokio::spawn(eager_worker(a.clone()).run(std::future::pending()));
    assert!(ctx.receiver.wait_for(5, Duration::from_secs(10)).await);
    // Renew at least once, then die without releasing anything.
    tokio::time::sleep(LEASE).await;
    crashed.abort();
    assert!(crashed.await.unwrap_err().is_cancelled());
    let died = Instant::now();
    assert_eq!(ctx.scalar(LEASED, &[]).await, 5, "the crash released nothing");

    ctx.receiver.set_default_reply(Reply::status(200));
    let survivor = RunningWorker::spawn(eager_worker(ctx.dispatcher()));
    assert!(
        ctx.receiver.wait_for(10, Duration::from_secs(20)).await,
        "the crashed worker's messages never came back"
    );
    let took = died.elapsed();
    // One lease after its last renewal, plus a poll interval and a claim; generous for a loaded machine, and
    // far below any worst-case lease.
    assert!(
        took < LEASE * 4,
        "taken over {took:?} after the crash, with a {LEASE:?} lease"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in &ids {
        while a.message(id).await.unwrap().state != MessageState::Delivered {
            assert!(Instant::now() < deadline, "{id} never delivered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let report = survivor.stop().await;
    assert_eq!(report.deliveries.delivered, 5, "{report:?}");
    assert_each_delivered_with_one_attempt(&ctx, &a, &ids).await;
}

/// A worker with one delivery slot that has claimed three messages to one endpoint (one in flight, two
/// queued), the first answered only after four leases: returns its dispatcher, its executor (to fail its
/// statements), the message ids, and the worker running.
async fn one_slot_worker_holding_three(
    ctx: &Ctx,
) -> (
    Dispatcher<Exec>,
    std::sync::Arc<FaultyExecutor<Exec>>,
    Vec<String>,
    RunningWorker,
) {
    let faulty = FaultyExecutor::new(ctx.exec.clone());
    let exec: Exec = faulty.clone();
    // Owner and host caps above the one slot, so that claims keep visiting the owner while its attempt runs
    // (at a full owner they would pass over it, and nothing would be claimed back until the attempt ends).
    let d = ctx
        .builder()
        .concurrency(1)
        .per_owner_concurrency(2)
        .per_host_concurrency(2)
        .build()
        .using(exec);
    let ids = enqueue(ctx, &d, 3).await;
    ctx.receiver.push_replies([Reply::Delayed(4 * LEASE)]);
    let running = RunningWorker::spawn(eager_worker(d.clone()));
    assert!(ctx.receiver.wait_for(1, Duration::from_secs(10)).await);
    (d, faulty, ids, running)
}

/// Waits until the first worker's slow first attempt has been answered (four leases after it arrived) and a
/// little more, so that anything it still meant to attempt afterwards has been.
async fn until_the_slow_attempt_is_over(ctx: &Ctx) {
    let first_at = ctx.receiver.received()[0].at;
    tokio::time::sleep_until((first_at + 4 * LEASE + LEASE / 2).into()).await;
}

// Catches: a worker that goes on to attempt messages still queued after their leases lapsed and were taken
// over (each would be delivered twice), and a late result recorded over the new holder's.
async fn a_lease_lost_while_renewals_failed_is_not_attempted_again_and_its_late_result_is_refused(
    engine: Engine,
) {
    let ctx = Ctx::new(engine).await;
    let (a, faulty, ids, first) = one_slot_worker_holding_three(&ctx).await;
    // The database is out of the first worker's reach: its leases lapse, and the second worker takes all
    // three over and delivers them.
    let statements = faulty.statements();
    faulty.fail_next(statements.renew_leases, usize::MAX);
    faulty.fail_next(statements.claim_due, usize::MAX);
    let second = RunningWorker::spawn(eager_worker(ctx.dispatcher()));
    assert!(
        ctx.receiver.wait_for(4, Duration::from_secs(10)).await,
        "the lapsed leases were not taken over"
    );
    // Back in reach: the first worker's next renewal finds the tokens gone.
    faulty.fail_next(statements.renew_leases, 0);
    faulty.fail_next(statements.claim_due, 0);
    until_the_slow_attempt_is_over(&ctx).await;
    let first = first.stop().await;
    let second = second.stop().await;
    assert_eq!(second.deliveries.delivered, 3, "{second:?}");
    // Its in-flight attempt finished and the result was refused; the two it had queued were never attempted.
    assert_eq!(
        (first.deliveries.attempted, first.discarded, first.released),
        (0, 1, 0),
        "{first:?}"
    );
    assert_eq!(
        ctx.receiver.count(),
        4,
        "only the attempt in flight at the takeover is repeated"
    );
    assert_each_delivered_with_one_attempt(&ctx, &a, &ids).await;
}

// Catches: a worker whose lapsed leases its own claim takes back (under new tokens) and that then attempts
// both copies of each queued message, the stale one and the new one.
async fn a_message_a_worker_claims_back_after_its_own_lease_lapsed_is_attempted_once_more_not_twice(
    engine: Engine,
) {
    let ctx = Ctx::new(engine).await;
    let (a, faulty, ids, first) = one_slot_worker_holding_three(&ctx).await;
    // Only its renewals fail: its leases lapse and its own next claim takes the three back.
    faulty.fail_next(faulty.statements().renew_leases, usize::MAX);
    until_the_slow_attempt_is_over(&ctx).await;
    faulty.fail_next(faulty.statements().renew_leases, 0);
    assert!(
        ctx.receiver.wait_for(4, Duration::from_secs(10)).await,
        "the messages claimed back were not delivered"
    );
    let report = first.stop().await;
    assert_eq!(
        (report.deliveries.delivered, report.discarded),
        (3, 1),
        "{report:?}"
    );
    // The first message twice (the slow attempt, whose result was refused, and once more), the others once.
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for r in ctx.receiver.received() {
        *seen
            .entry(r.headers["webhook-id"].to_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let slow = ctx.receiver.received()[0].headers["webhook-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(seen.get(&slow), Some(&2), "{seen:?}");
    assert_eq!(
        seen.values().sum::<usize>(),
        4,
        "a stale copy was attempted: {seen:?}"
    );
    assert_each_delivered_with_one_attempt(&ctx, &a, &ids).await;
}
