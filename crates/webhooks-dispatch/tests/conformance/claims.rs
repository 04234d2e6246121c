//! Endpoint-driven claims: endpoints are served oldest first within a claim's limit, and a worker claims ahead
//! only for endpoints that keep up, while in-flight attempts never exceed the per-endpoint cap.

use std::time::Duration;

use webhooks_dispatch::store::Value;
use webhooks_dispatch::{DeliverDue, NewEndpoint, NewMessage, Worker};
use webhooks_dispatch_testkit::receiver::Reply;

use crate::conformance;
use crate::support::{t0, Ctx, Engine, ManualClock, RunningWorker};

conformance!(
    a_claim_serves_endpoints_oldest_first_and_fills_its_limit,
    a_worker_claims_ahead_for_an_endpoint_that_keeps_up_but_not_for_a_failing_one,
);

const LEASED_FOR: &str =
    "SELECT count(*) FROM webhooks_dispatch_outbox WHERE endpoint_id = $1 AND lease_token IS NOT NULL";

/// Three endpoints whose oldest messages are 3, 2 and 1 minutes old; per-endpoint cap 2; a drain of 5 takes
/// the two oldest endpoints' free slots in full and the rest from the third, and skips nothing it could take.
async fn a_claim_serves_endpoints_oldest_first_and_fills_its_limit(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let clock = ManualClock::at(t0());
    let d = ctx
        .builder()
        .clock(clock.clone())
        .per_endpoint_concurrency(2)
        .build();
    let mut endpoints = Vec::new();
    for path in ["young", "middle", "old"] {
        let url = format!("https://receiver.test:{}/{path}", ctx.receiver.port());
        endpoints.push(d.register_endpoint(NewEndpoint::new("o", url)).await.unwrap().id);
    }
    // Oldest first in time: "old" gets its messages first, then "middle", then "young".
    for ep in endpoints.iter().rev() {
        for i in 0..3 {
            d.dispatch(NewMessage::new(ep, "a", i)).await.unwrap();
        }
        clock.advance(Duration::from_secs(60));
    }
    let r = d
        .deliver_due(DeliverDue {
            now: None,
            batch: Some(5),
        })
        .await
        .unwrap();
    assert_eq!(r.delivered, 5, "the claim filled its limit");
    let per_path = |path: &str| ctx.receiver.received().iter().filter(|r| r.path == path).count();
    assert_eq!(
        (per_path("/old"), per_path("/middle"), per_path("/young")),
        (2, 2, 1),
        "oldest first, each endpoint within its cap"
    );
}

/// A fast endpoint's messages are claimed ahead of its free slots (leased far beyond its cap while only the
/// cap is in flight); an endpoint answering 503 gets no claim-ahead, so its surplus stays in the table.
/// Leased rows also include finished attempts the recorder has not written yet, up to about one cap's worth
/// here; claim-ahead (up to 4 × the cap beyond it) is what exceeds twice the cap.
async fn a_worker_claims_ahead_for_an_endpoint_that_keeps_up_but_not_for_a_failing_one(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let failing = webhooks_dispatch_testkit::receiver::Receiver::start(&ctx.ca, Default::default())
        .await
        .unwrap();
    failing.set_default_reply(Reply::DelayedStatus(Duration::from_millis(50), 503));
    ctx.receiver
        .set_default_reply(Reply::Delayed(Duration::from_millis(5)));
    let d = ctx.builder().per_endpoint_concurrency(2).build();
    let fast_url = format!("https://receiver.test:{}/fast", ctx.receiver.port());
    let fast = d
        .register_endpoint(NewEndpoint::new("o", fast_url))
        .await
        .unwrap()
        .id;
    let failing_url = format!("https://receiver.test:{}/failing", failing.port());
    let bad = d
        .register_endpoint(NewEndpoint::new("o", failing_url))
        .await
        .unwrap()
        .id;
    for chunk in 0..2 {
        let msgs = (0..150)
            .flat_map(|i| {
                [
                    NewMessage::new(&fast, "a", chunk * 150 + i),
                    NewMessage::new(&bad, "a", i),
                ]
            })
            .collect();
        d.dispatch_many(msgs).await.unwrap();
    }
    let running = RunningWorker::spawn(Worker::new(d.clone()));
    let (mut fast_leased, mut bad_leased) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while ctx.receiver.count() < 300 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fast endpoint's backlog stalled"
        );
        fast_leased = fast_leased.max(ctx.scalar(LEASED_FOR, &[Value::from(fast.as_str())]).await);
        bad_leased = bad_leased.max(ctx.scalar(LEASED_FOR, &[Value::from(bad.as_str())]).await);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    running.stop().await;
    assert!(
        fast_leased > 4,
        "never claimed ahead for the fast endpoint (at most {fast_leased} leased)"
    );
    assert!(
        bad_leased <= 4,
        "claimed ahead for a failing endpoint ({bad_leased} leased)"
    );
    assert!(failing.count() > 0, "the failing endpoint was attempted");
    assert!(
        ctx.receiver.max_in_flight_for("/fast") <= 2,
        "the in-flight cap was exceeded"
    );
    assert!(failing.max_in_flight() <= 2);
}
