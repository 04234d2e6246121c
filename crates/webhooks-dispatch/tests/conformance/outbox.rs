use std::collections::HashSet;
use std::time::Duration;

use webhooks_dispatch::store::Value;
use webhooks_dispatch::{DeliverDue, MessageState, NewEndpoint, NewMessage, StorageErrorKind};

use crate::conformance;
use crate::support::{CountingExecutor, Ctx, Engine};

conformance!(
    migrate_is_idempotent_and_creates_exactly_its_seven_tables,
    invariant2_dispatch_only_writes_the_outbox,
    invariant5_same_idempotency_key_yields_one_outbox_row,
    invariant5_webhook_id_is_stable_across_attempts,
    invariant8_sql_metacharacters_round_trip_literally,
    invariant8_every_executed_statement_is_a_vetted_constant,
    event_types_are_enforced_deduplicated_and_sorted,
    unknown_endpoint_is_a_typed_404,
    attempt_numbers_are_unique_per_message,
    observer_and_queue_stats_report_what_happened,
);

const COUNT_OUTBOX: &str = "SELECT count(*) FROM webhooks_dispatch_outbox";
const TABLES_POSTGRES: &str = "SELECT table_name::text FROM information_schema.tables \
                               WHERE table_schema = current_schema() ORDER BY 1";
const TABLES_SQLITE: &str = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1";

async fn migrate_is_idempotent_and_creates_exactly_its_seven_tables(engine: Engine) {
    let ctx = Ctx::new(engine).await; // migrated once already
    let d = ctx.dispatcher();
    let (a, b) = tokio::join!(d.migrate(), d.migrate());
    a.unwrap();
    b.unwrap();
    let tables = match engine {
        Engine::Sqlite => TABLES_SQLITE,
        _ => TABLES_POSTGRES,
    };
    let rows = ctx.exec.query(tables, &[]).await.unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.text(0).unwrap()).collect();
    assert_eq!(
        names,
        [
            "webhooks_dispatch_attempts",
            "webhooks_dispatch_endpoint_keys",
            "webhooks_dispatch_endpoints",
            "webhooks_dispatch_event_skips",
            "webhooks_dispatch_events",
            "webhooks_dispatch_migrations",
            "webhooks_dispatch_outbox"
        ]
    );
}

async fn invariant2_dispatch_only_writes_the_outbox(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let (ep, _) = ctx.endpoint(&d).await;
    let lookups_after_registration = ctx.resolver.lookups();
    let mut ids = Vec::new();
    for i in 0..5 {
        let sent = d
            .dispatch(NewMessage::new(
                &ep,
                "invoice.paid",
                serde_json::json!({ "i": i }),
            ))
            .await
            .unwrap();
        assert!(sent.message_id.starts_with("msg_") && sent.created);
        ids.push(sent.message_id);
    }
    assert_eq!(ctx.scalar(COUNT_OUTBOX, &[]).await, 5);
    assert_eq!(
        ctx.receiver.connections_accepted(),
        0,
        "dispatch opened a connection"
    );
    assert_eq!(
        ctx.resolver.lookups(),
        lookups_after_registration,
        "dispatch resolved a name"
    );
    // Nor later: a POST or a lookup that `dispatch` left running in the background would show up here.
    assert!(
        !ctx.receiver.wait_for(1, Duration::from_millis(500)).await,
        "a request reached the endpoint after dispatch returned, with no delivery run"
    );
    assert_eq!(ctx.receiver.connections_accepted(), 0);
    assert_eq!(ctx.resolver.lookups(), lookups_after_registration);
    for id in &ids {
        let m = d.message(id).await.unwrap();
        assert_eq!(m.state, MessageState::Pending);
        assert_eq!(m.attempts, 0);
        assert!(d.list_attempts(id).await.unwrap().is_empty());
    }
    // Delivery, and only delivery, performs HTTP.
    let report = d.deliver_due(DeliverDue::default()).await.unwrap();
    assert_eq!((report.attempted, report.delivered), (5, 5));
    assert_eq!(ctx.receiver.count(), 5);
}

async fn invariant5_same_idempotency_key_yields_one_outbox_row(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let (ep, _) = ctx.endpoint(&d).await;
    let (other, _) = ctx.endpoint(&d).await;
    let msg = |ep: &str| {
        NewMessage::new(ep, "invoice.paid", serde_json::json!({"n": 1})).idempotency_key("order-7")
    };

    let first = d.dispatch(msg(&ep)).await.unwrap();
    let again = d.dispatch(msg(&ep)).await.unwrap();
    assert!(first.created && !again.created);
    assert_eq!(first.message_id, again.message_id);
    let elsewhere = d.dispatch(msg(&other)).await.unwrap();
    assert_ne!(
        elsewhere.message_id, first.message_id,
        "keys are scoped per endpoint"
    );

    // Racing dispatches with one key still make exactly one row.
    let racers = (0..16).map(|_| {
        let d = d.clone();
        let ep = ep.clone();
        tokio::spawn(async move {
            d.dispatch(NewMessage::new(&ep, "invoice.paid", 1).idempotency_key("race"))
                .await
                .unwrap()
        })
    });
    let results = futures_util::future::join_all(racers).await;
    let ids: HashSet<String> = results.into_iter().map(|r| r.unwrap().message_id).collect();
    assert_eq!(ids.len(), 1);
    // order-7 twice on ep (1 row) + once on other + race (1 row)
    assert_eq!(ctx.scalar(COUNT_OUTBOX, &[]).await, 3);

    // The same key with another payload or event type is refused, not answered with the first message's id.
    for conflicting in [
        NewMessage::new(&ep, "invoice.paid", serde_json::json!({"n": 2})).idempotency_key("order-7"),
        NewMessage::new(&ep, "invoice.voided", serde_json::json!({"n": 1})).idempotency_key("order-7"),
    ] {
        let err = d.dispatch(conflicting).await.unwrap_err();
        assert_eq!((err.code(), err.http_status()), ("idempotency_conflict", 409));
    }
    assert_eq!(ctx.scalar(COUNT_OUTBOX, &[]).await, 3);

    // No key: every dispatch is its own message.
    let a = d.dispatch(NewMessage::new(&ep, "invoice.paid", 1)).await.unwrap();
    let b = d.dispatch(NewMessage::new(&ep, "invoice.paid", 1)).await.unwrap();
    assert_ne!(a.message_id, b.message_id);
}

async fn invariant5_webhook_id_is_stable_across_attempts(engine: Engine) {
    use crate::support::{t0, ManualClock};
    use webhooks_dispatch::RetryPolicy;
    use webhooks_dispatch_testkit::receiver::Reply;

    let ctx = Ctx::new(engine).await;
    let clock = ManualClock::at(t0());
    let d = ctx.dispatcher_at(clock.clone(), RetryPolicy::default());
    let (ep, _) = ctx.endpoint(&d).await;
    ctx.receiver.push_replies([
        Reply::Status {
            status: 503,
            headers: vec![],
            body: vec![],
        },
        Reply::Status {
            status: 500,
            headers: vec![],
            body: vec![],
        },
    ]);
    let sent = d.dispatch(NewMessage::new(&ep, "a", 1)).await.unwrap();
    for _ in 0..3 {
        d.deliver_due(DeliverDue::default()).await.unwrap();
        clock.advance(Duration::from_secs(3600));
    }
    let got = ctx.receiver.received();
    assert_eq!(got.len(), 3);
    for r in &got {
        assert_eq!(r.headers["webhook-id"].to_str().unwrap(), sent.message_id);
    }
    assert_eq!(
        d.message(&sent.message_id).await.unwrap().state,
        MessageState::Delivered
    );
}

async fn invariant8_sql_metacharacters_round_trip_literally(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let owner = "o'; DROP TABLE webhooks_dispatch_outbox; -- $1 \\ %_ \"q\"";
    let event_type = "invoice'.paid\"; DELETE FROM webhooks_dispatch_endpoints; --$2";
    let ep = d
        .register_endpoint(NewEndpoint::new(owner, ctx.url()).event_types([event_type, "x'y"]))
        .await
        .unwrap();
    let stored = d.endpoint(&ep.id).await.unwrap();
    assert_eq!(stored.owner_id, owner);
    let mut expected_types = vec![event_type.to_owned(), "x'y".to_owned()];
    expected_types.sort();
    assert_eq!(stored.event_types, expected_types);

    let payload = serde_json::json!({
        "sql": "'); DELETE FROM webhooks_dispatch_outbox; --",
        "placeholders": "$1 $2 ? :name",
        "escapes": "back\\slash \"quote\" \u{0000} nul \n newline",
        "unicode": "ünïcødé 🚀",
    });
    let key = "key'; --";
    let sent = d
        .dispatch(NewMessage::new(&ep.id, event_type, &payload).idempotency_key(key))
        .await
        .unwrap();
    let again = d
        .dispatch(NewMessage::new(&ep.id, event_type, &payload).idempotency_key(key))
        .await
        .unwrap();
    assert_eq!(sent.message_id, again.message_id);
    assert_eq!(d.message(&sent.message_id).await.unwrap().event_type, event_type);
    d.deliver_due(DeliverDue::default()).await.unwrap();
    let got = ctx.receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        &got[0].body[..],
        serde_json::to_string(&payload).unwrap().as_bytes()
    );
    assert_eq!(ctx.scalar(COUNT_OUTBOX, &[]).await, 1, "tables intact");
}

async fn invariant8_every_executed_statement_is_a_vetted_constant(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let exec = CountingExecutor::new(ctx.exec.clone());
    let d = ctx.dispatcher().using(exec.clone());
    d.migrate().await.unwrap();
    let (ep, _) = ctx.endpoint(&d).await;
    let sent = d
        .dispatch(NewMessage::new(&ep, "a", 1).idempotency_key("k"))
        .await
        .unwrap();
    d.dispatch(NewMessage::new(&ep, "a", 1).idempotency_key("k"))
        .await
        .unwrap();
    d.deliver_due(DeliverDue::default()).await.unwrap();
    d.list_attempts(&sent.message_id).await.unwrap();
    d.message(&sent.message_id).await.unwrap();
    d.endpoint(&ep).await.unwrap();
    let seen = exec.seen.lock().unwrap().clone();
    assert!(seen.len() >= 8);
    for statement in seen {
        assert!(
            ctx.exec.statements().all().contains(&statement),
            "statement outside the vetted catalogue: {statement}"
        );
    }
}

async fn event_types_are_enforced_deduplicated_and_sorted(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let ep = d
        .register_endpoint(NewEndpoint::new("o", ctx.url()).event_types([
            "invoice.paid",
            "a.b",
            "invoice.paid",
        ]))
        .await
        .unwrap();
    assert_eq!(
        d.endpoint(&ep.id).await.unwrap().event_types,
        ["a.b", "invoice.paid"]
    );
    d.dispatch(NewMessage::new(&ep.id, "invoice.paid", 1))
        .await
        .unwrap();
    let err = d
        .dispatch(NewMessage::new(&ep.id, "invoice.created", 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "event_type_not_subscribed");
    assert_eq!(err.http_status(), 400);
    assert_eq!(ctx.scalar(COUNT_OUTBOX, &[]).await, 1);

    // No list (or an empty one) means every event type.
    let all = d
        .register_endpoint(NewEndpoint::new("o", ctx.url()))
        .await
        .unwrap();
    let empty = d
        .register_endpoint(NewEndpoint::new("o", ctx.url()).event_types(Vec::<String>::new()))
        .await
        .unwrap();
    d.dispatch(NewMessage::new(&all.id, "anything.at_all", 1))
        .await
        .unwrap();
    d.dispatch(NewMessage::new(&empty.id, "anything.at_all", 1))
        .await
        .unwrap();
}

async fn unknown_endpoint_is_a_typed_404(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let err = d.dispatch(NewMessage::new("ep_nope", "a", 1)).await.unwrap_err();
    assert_eq!((err.code(), err.http_status()), ("unknown_endpoint", 404));
    let err = d.list_attempts("msg_nope").await.unwrap_err();
    assert_eq!((err.code(), err.http_status()), ("unknown_message", 404));
    assert_eq!(ctx.scalar(COUNT_OUTBOX, &[]).await, 0);
}

const INSERT_DUPLICATE_ATTEMPT: &str = "\
INSERT INTO webhooks_dispatch_attempts (message_id, attempt_no, attempted_at, outcome, latency_ms)
SELECT message_id, attempt_no, attempted_at, outcome, latency_ms FROM webhooks_dispatch_attempts
WHERE message_id = $1 AND attempt_no = 1";

async fn attempt_numbers_are_unique_per_message(engine: Engine) {
    use webhooks_dispatch_testkit::receiver::Reply;
    let ctx = Ctx::new(engine).await;
    let clock = crate::support::ManualClock::at(crate::support::t0());
    let d = ctx.dispatcher_at(clock.clone(), webhooks_dispatch::RetryPolicy::default());
    let (ep, _) = ctx.endpoint(&d).await;
    ctx.receiver.set_default_reply(Reply::Status {
        status: 500,
        headers: vec![],
        body: vec![],
    });
    let sent = d.dispatch(NewMessage::new(&ep, "a", 1)).await.unwrap();
    for _ in 0..4 {
        d.deliver_due(DeliverDue::default()).await.unwrap();
        clock.advance(Duration::from_secs(3600));
    }
    let numbers: Vec<u32> = d
        .list_attempts(&sent.message_id)
        .await
        .unwrap()
        .iter()
        .map(|a| a.attempt_no)
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    // The database itself refuses a repeated attempt number, and the error is classified by SQLSTATE.
    let err = ctx
        .exec
        .query(INSERT_DUPLICATE_ATTEMPT, &[Value::from(sent.message_id.as_str())])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StorageErrorKind::UniqueViolation);
}

#[derive(Default)]
struct Counting {
    dispatched: std::sync::atomic::AtomicUsize,
    attempts: std::sync::Mutex<Vec<(String, Option<u16>, webhooks_dispatch::Outcome)>>,
}

impl webhooks_dispatch::Observer for Counting {
    fn dispatched(&self, created: usize) {
        self.dispatched
            .fetch_add(created, std::sync::atomic::Ordering::SeqCst);
    }
    fn attempt(&self, e: &webhooks_dispatch::AttemptEvent<'_>) {
        self.attempts
            .lock()
            .unwrap()
            .push((e.message_id.to_owned(), e.status_code, e.outcome));
    }
}

async fn observer_and_queue_stats_report_what_happened(engine: Engine) {
    use webhooks_dispatch_testkit::receiver::Reply;
    let ctx = Ctx::new(engine).await;
    let observer = std::sync::Arc::new(Counting::default());
    let clock = crate::support::ManualClock::at(crate::support::t0());
    let d = ctx
        .builder()
        .observer(observer.clone())
        .clock(clock.clone())
        .build();
    let (ep, _) = ctx.endpoint(&d).await;
    let a = d
        .dispatch(NewMessage::new(&ep, "a", 1).idempotency_key("k"))
        .await
        .unwrap();
    d.dispatch(NewMessage::new(&ep, "a", 1).idempotency_key("k"))
        .await
        .unwrap(); // replay: not counted
    d.dispatch_many(vec![NewMessage::new(&ep, "a", 2), NewMessage::new(&ep, "a", 3)])
        .await
        .unwrap();
    assert_eq!(observer.dispatched.load(std::sync::atomic::Ordering::SeqCst), 3);

    let stats = d.queue_stats(None).await.unwrap();
    assert_eq!(stats.due, 3);
    assert_eq!(stats.oldest_due_at, Some(crate::support::t0()));
    assert_eq!(
        d.queue_stats(Some(crate::support::t0() - chrono::Duration::seconds(1)))
            .await
            .unwrap()
            .due,
        0
    );

    ctx.receiver.push_replies([Reply::status(503)]);
    let report = d.deliver_due(DeliverDue::default()).await.unwrap();
    assert_eq!(report.attempted, 3);
    let seen = observer.attempts.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen.iter().filter(|(_, s, _)| *s == Some(503)).count(), 1);
    assert!(seen.iter().any(|(id, _, _)| *id == a.message_id));
    // One message is waiting for its retry, so nothing is due right now.
    assert_eq!(d.queue_stats(None).await.unwrap().due, 0);
}
