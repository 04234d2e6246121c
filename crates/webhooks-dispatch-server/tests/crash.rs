//! A `worker` process killed with SIGKILL in the middle of a run, and a second one started with default
//! settings: the killed worker's messages must come back within the recovery bound, none lost, none stuck,
//! and no more repeated deliveries than the attempts it had under way.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use webhooks_dispatch::store::Executor;
use webhooks_dispatch::{Dispatcher, NewEndpoint, NewMessage};
use webhooks_dispatch_testkit::receiver::{Received, Reply};

use crate::db;
use crate::process::{service_command, Service};
use crate::support::{bounded, Engine, Fixture};

/// Messages enqueued before the first worker starts.
const MESSAGES: usize = 200;
/// Spread over this many endpoints (each capped at the default 16 in flight), so the killed worker has
/// dozens of attempts under way and more claimed ahead.
const ENDPOINTS: usize = 4;
/// The receiver answers each request this long after it arrived: slow enough that attempts are in flight
/// at any moment, fast enough that the run takes seconds.
const ANSWER_AFTER: Duration = Duration::from_millis(400);
/// Longest a crashed worker's messages may wait before they are attempted again, with default settings.
const RECOVERY_BOUND: Duration = Duration::from_secs(15);
/// How long after the kill the test waits for everything to be delivered before it fails.
const PATIENCE: Duration = Duration::from_secs(25);

// Catches: a lease that is not kept short and alive (a crash then holds its messages for the old worst-case
// lease, 80 s with default settings), a renewal that keeps a dead worker's leases (they never come back),
// and a takeover that repeats more than the attempts actually under way or loses a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_nothing_and_its_messages_are_attempted_again_within_15s() {
    bounded(
        "crash::a_killed_worker_loses_nothing_and_its_messages_are_attempted_again_within_15s",
        killed_worker(),
    )
    .await
}

async fn killed_worker() {
    let fixture = Fixture::new(Engine::Postgres).await;
    fixture.receiver.set_default_reply(Reply::Delayed(ANSWER_AFTER));
    let db = db::open(&fixture.database_url).await;
    let ids = enqueue(&fixture, db.clone()).await;
    let kill = kill_mid_run(&fixture, &*db).await;

    let b = Service::spawn(service_command(&fixture, &["worker"]));
    let deadline = kill.at + PATIENCE;
    loop {
        let pending = db::outbox(&*db)
            .await
            .into_iter()
            .filter(|r| r.status != "delivered")
            .count();
        if pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} messages still undelivered {PATIENCE:?} after the kill ({} were held by the killed \
             worker):\n{}",
            kill.held.len(),
            b.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, logs) = b.terminate().await;
    assert!(status.success(), "worker B exit: {status:?}\n{logs}");

    assert_nothing_lost_or_stuck(&*db, &ids).await;
    let all = by_message(fixture.receiver.received().iter());
    assert_eq!(
        all.keys().cloned().collect::<HashSet<_>>(),
        ids,
        "every message reached the receiver"
    );
    // Repeats only of attempts under way at the kill, each at most once more.
    let repeated: Vec<(&String, usize)> = all
        .iter()
        .filter(|(_, at)| at.len() > 1)
        .map(|(id, at)| (id, at.len()))
        .collect();
    for (id, times) in &repeated {
        assert!(
            kill.in_flight.contains(*id) && *times == 2,
            "{id} received {times} times, not one of the killed worker's attempts under way"
        );
    }
    assert!(repeated.len() <= kill.in_flight.len());

    // Recovery: from the kill to the last of the killed worker's messages attempted again.
    let recovered_in = kill
        .held
        .iter()
        .map(|id| {
            let again = all[id]
                .iter()
                .find(|&&at| at > kill.at)
                .unwrap_or_else(|| panic!("{id} held by the killed worker was not attempted again"));
            again.duration_since(kill.at)
        })
        .max()
        .expect("held is not empty");
    assert!(
        recovered_in < RECOVERY_BOUND,
        "the killed worker's messages were attempted again only {recovered_in:?} after the kill"
    );
    eprintln!(
        "held by the killed worker: {}, its attempts under way: {} ({} unanswered at the kill), \
         repeated: {}, recovered in {recovered_in:?}",
        kill.held.len(),
        kill.in_flight.len(),
        kill.unanswered,
        repeated.len()
    );
}

/// What the killed worker left behind.
struct Kill {
    at: Instant,
    /// Every message it held: queued, in flight, or answered and not yet recorded.
    held: HashSet<String>,
    /// Its attempts under way, from the receiver's side: requests received for messages it had not recorded,
    /// still waiting for their answer or answered with its record of that not yet written.
    in_flight: HashSet<String>,
    /// Of those, the requests not yet answered.
    unanswered: usize,
}

/// Runs worker A until some messages are delivered and recorded and more are in flight, then SIGKILLs it.
async fn kill_mid_run(fixture: &Fixture, db: &dyn Executor) -> Kill {
    let a = Service::spawn(service_command(fixture, &["worker"]));
    // The first wave answered, the next one sent.
    let wanted = ENDPOINTS * 16 + 20;
    assert!(
        fixture.receiver.wait_for(wanted, Duration::from_secs(30)).await,
        "worker A did not get going:\n{}",
        a.logs()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while delivered(db).await == 0 {
        assert!(Instant::now() < deadline, "A recorded nothing:\n{}", a.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Into the next wave, so the kill finds most of its attempts waiting for their answers.
    tokio::time::sleep(ANSWER_AFTER / 2).await;
    a.kill().await;
    let at = Instant::now();
    // Nobody else is running: every leased row is one the killed worker held.
    let held: HashSet<String> = db::outbox(db)
        .await
        .into_iter()
        .filter(|r| r.status == "pending" && r.lease_token.is_some())
        .map(|r| r.id)
        .collect();
    let received = fixture.receiver.received();
    let before = by_message(received.iter().filter(|r| r.at < at));
    let in_flight: HashSet<String> = held
        .iter()
        .filter(|id| before.contains_key(*id))
        .cloned()
        .collect();
    let unanswered = received
        .iter()
        .filter(|r| r.at < at && r.at + ANSWER_AFTER > at)
        .count();
    assert!(
        !held.is_empty() && !in_flight.is_empty(),
        "the kill came too late to test anything: held {}, in flight {}",
        held.len(),
        in_flight.len()
    );
    Kill {
        at,
        held,
        in_flight,
        unanswered,
    }
}

/// Every message delivered, none still leased, one recorded attempt each (the killed worker recorded what it
/// finished; what it had under way is recorded by the second worker alone), and each reached the receiver.
async fn assert_nothing_lost_or_stuck(db: &dyn Executor, ids: &HashSet<String>) {
    let rows = db::outbox(db).await;
    assert_eq!(rows.len(), MESSAGES);
    for row in &rows {
        assert_eq!(
            (row.status.as_str(), row.lease_token.as_deref()),
            ("delivered", None),
            "{row:?}"
        );
    }
    let attempts = db::attempts(db).await;
    let recorded: HashSet<&str> = attempts.iter().map(|a| a.message_id.as_str()).collect();
    assert_eq!(
        (attempts.len(), recorded.len()),
        (MESSAGES, MESSAGES),
        "one attempt per message"
    );
    assert_eq!(rows.iter().map(|r| r.id.clone()).collect::<HashSet<_>>(), *ids);
}

/// Migrates, registers [`ENDPOINTS`] endpoints on the receiver and enqueues [`MESSAGES`] round-robin;
/// returns the message ids.
async fn enqueue(fixture: &Fixture, db: Arc<dyn Executor>) -> HashSet<String> {
    let d = Dispatcher::builder(db)
        .allow_net("127.0.0.1/32".parse().expect("a network"))
        .build();
    d.migrate().await.expect("migrate");
    let mut endpoints = Vec::new();
    for e in 0..ENDPOINTS {
        let url = format!("https://127.0.0.1:{}/e{e}", fixture.receiver.port());
        let ep = d
            .register_endpoint(NewEndpoint::new("acme", url))
            .await
            .expect("register");
        endpoints.push(ep.id);
    }
    let messages = (0..MESSAGES)
        .map(|i| NewMessage::new(&endpoints[i % ENDPOINTS], "a", i))
        .collect();
    d.dispatch_many(messages)
        .await
        .expect("enqueue")
        .into_iter()
        .map(|m| m.message_id)
        .collect()
}

async fn delivered(db: &dyn Executor) -> usize {
    db::outbox(db)
        .await
        .iter()
        .filter(|r| r.status == "delivered")
        .count()
}

/// Arrival times at the receiver per message (`webhook-id`), in order.
fn by_message<'a>(received: impl Iterator<Item = &'a Received>) -> HashMap<String, Vec<Instant>> {
    let mut by_id: HashMap<String, Vec<Instant>> = HashMap::new();
    for r in received {
        let id = r.headers["webhook-id"].to_str().expect("ASCII id").to_owned();
        by_id.entry(id).or_default().push(r.at);
    }
    by_id
}
