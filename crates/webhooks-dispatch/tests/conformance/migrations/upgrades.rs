//! Upgrades from the schema of each earlier numbered release: the release's executor (knowing only its
//! migrations) creates the database, old rows go in with plain SQL, and this release migrates it in place.

use chrono::Utc;
use webhooks_dispatch::store::{BoxFuture, Executor, Row, Statements, Value};
use webhooks_dispatch::{
    verify, DeliverDue, Dispatcher, EndpointStatus, MessageState, Outcome, StorageError,
};

use super::{
    dump, known, new_index, old_database_with_rows, recorded, rows, seed_old_rows, table_names, unmigrated,
    versions, DUE, SETTLED, TABLES,
};
use crate::conformance;
use crate::support::{Ctx, Engine, Exec};

conformance!(
    upgrade_from_the_unnumbered_schema_keeps_every_row_and_delivers_what_was_pending,
    upgrade_from_schema_2_keeps_every_row_makes_endpoints_active_and_fans_out,
    upgrade_from_schema_3_keeps_every_row_and_status_and_adds_the_lifecycle_columns,
    upgrade_from_schema_4_keeps_every_row_and_starts_every_endpoint_unheld,
    upgrade_from_schema_5_makes_each_secret_the_current_key_that_signs_and_rekey_seals_it,
);

/// The executor of an earlier release, which knew only the first `known` migrations.
struct EarlierRelease {
    inner: Exec,
    statements: &'static Statements,
}

impl EarlierRelease {
    fn knowing(inner: Exec, known: usize) -> Self {
        let current = inner.statements();
        // Leaked: the executor hands out `&'static Statements`, and a test makes one or two.
        let statements = Box::leak(Box::new(Statements {
            migrations: &current.migrations[..known],
            ..*current
        }));
        EarlierRelease { inner, statements }
    }
}

impl Executor for EarlierRelease {
    fn statements(&self) -> &'static Statements {
        self.statements
    }
    fn query<'a>(
        &'a self,
        sql: &'static str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>, StorageError>> {
        self.inner.query(sql, params)
    }
    fn batch_execute<'a>(&'a self, sql: &'static str) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.batch_execute(sql)
    }
}

/// A fresh database made by the release that knew only the first `known` migrations.
async fn made_by_release(engine: Engine, known: usize) -> Ctx {
    let ctx = unmigrated(engine).await;
    Dispatcher::new(EarlierRelease::knowing(ctx.exec.clone(), known))
        .migrate()
        .await
        .expect("the schema of the release before");
    let expected: Vec<i64> = (1..=known as i64).collect();
    assert_eq!(versions(ctx.exec.as_ref()).await, expected);
    ctx
}

/// This release's dispatcher, after it migrated `ctx`'s database to its schema without changing a row of
/// what `before` dumped.
async fn upgraded_keeping(ctx: &Ctx, before: &[Vec<Row>]) -> Dispatcher<Exec> {
    let d = ctx.dispatcher();
    d.migrate().await.expect("upgrade");
    let exec = ctx.exec.as_ref();
    assert_eq!(versions(exec).await, known(exec.statements()));
    assert_eq!(dump(exec).await, before, "the upgrade changed a row");
    d
}

/// Messages delivered by `drains` calls of `deliver_due`.
async fn delivered_in(d: &Dispatcher<Exec>, drains: usize) -> u64 {
    let mut delivered = 0;
    for _ in 0..drains {
        delivered += d
            .deliver_due(DeliverDue::default())
            .await
            .expect("deliver")
            .delivered;
    }
    delivered
}

// 0003 (events and endpoint status) on a database made by the release before it: every row stays, every
// endpoint is active, no message belongs to an event, what was pending is delivered, and the new tables work.
async fn upgrade_from_schema_2_keeps_every_row_makes_endpoints_active_and_fans_out(engine: Engine) {
    let ctx = made_by_release(engine, 2).await;
    let endpoints = seed_old_rows(&ctx, engine).await;
    let before = dump(ctx.exec.as_ref()).await;
    assert_eq!(before.iter().map(Vec::len).collect::<Vec<_>>(), [2, 6, 4]);

    let d = upgraded_keeping(&ctx, &before).await;
    let exec = ctx.exec.as_ref();
    assert_eq!(table_names(engine, exec).await, TABLES);
    for (id, _) in &endpoints {
        let endpoint = d.endpoint(id).await.expect("endpoint");
        assert_eq!(endpoint.status, webhooks_dispatch::EndpointStatus::Active);
        assert_eq!((endpoint.disabled_reason, endpoint.disabled_at), (None, None));
    }
    let with_event = rows(
        exec,
        "SELECT count(*) FROM webhooks_dispatch_outbox WHERE event_id IS NOT NULL",
        &[],
    )
    .await;
    assert_eq!(with_event[0].int(0).unwrap(), 0);

    let delivered = delivered_in(&d, DUE.len()).await;
    assert_eq!(delivered, DUE.len() as u64, "what the old release left due");

    // The old endpoints take events: owner_0's endpoint subscribes to everything.
    let sent = d
        .dispatch_event(webhooks_dispatch::NewEvent::new(
            "owner_0",
            "invoice.paid",
            serde_json::json!({"n": 7}),
        ))
        .await
        .expect("fan-out on the upgraded schema");
    let targets: Vec<&str> = sent.messages.iter().map(|m| m.endpoint_id.as_str()).collect();
    assert_eq!(targets, [endpoints[0].0]);
    let report = d.deliver_due(DeliverDue::default()).await.unwrap();
    assert_eq!((report.attempted, report.delivered), (1, 1));
    let got = ctx.receiver.received();
    let last = got.last().unwrap();
    assert_eq!(last.headers["webhook-id"], sent.messages[0].message_id.as_str());
    assert_eq!(&last.body[..], br#"{"n":7}"#);
    let header = |name: &str| last.headers.get(name).and_then(|v| v.to_str().ok());
    verify(&endpoints[0].1, header, &last.body).expect("signed with the old endpoint's secret");
}

/// An event of the release before, with its one fanned-out message (payload on the event, due), inserted
/// with plain SQL in each engine's dialect.
const OLD_EVENT: [(&str, &str); 2] = [
    (
        "INSERT INTO webhooks_dispatch_events (id, owner_id, event_type, payload, idempotency_key, created_at) \
         VALUES ('evt_old', 'owner_0', 'invoice.paid', '{\"n\":8}', 'evt-key', $1::timestamptz)",
        "INSERT INTO webhooks_dispatch_outbox (id, endpoint_id, event_type, payload, event_id, status, \
         attempts, next_attempt_at, created_at, updated_at) VALUES ('msg_evt_old', 'ep_old_a', \
         'invoice.paid', '', 'evt_old', 'pending', 0, $1::timestamptz, $1::timestamptz, $1::timestamptz)",
    ),
    (
        "INSERT INTO webhooks_dispatch_events (id, owner_id, event_type, payload, idempotency_key, created_at) \
         VALUES ('evt_old', 'owner_0', 'invoice.paid', '{\"n\":8}', 'evt-key', $1)",
        "INSERT INTO webhooks_dispatch_outbox (id, endpoint_id, event_type, payload, event_id, status, \
         attempts, next_attempt_at, created_at, updated_at) VALUES ('msg_evt_old', 'ep_old_a', \
         'invoice.paid', '', 'evt_old', 'pending', 0, $1, $1, $1)",
    ),
];

// 0004 (endpoint lifecycle) on a database made by the release before it: every row stays, endpoints keep
// their status and gain empty descriptions, metadata and headers, the old event's message and everything
// pending are delivered, and the new operations work on the old rows.
async fn upgrade_from_schema_3_keeps_every_row_and_status_and_adds_the_lifecycle_columns(engine: Engine) {
    let ctx = made_by_release(engine, 3).await;
    let endpoints = seed_old_rows(&ctx, engine).await;
    let exec = ctx.exec.as_ref();
    let (event, message) = OLD_EVENT[usize::from(matches!(engine, Engine::Sqlite))];
    let when = [Value::from(chrono::Utc::now() - chrono::Duration::hours(1))];
    rows(exec, event, &when).await;
    rows(exec, message, &when).await;
    let before = dump(exec).await;
    assert_eq!(before.iter().map(Vec::len).collect::<Vec<_>>(), [2, 7, 4]);

    let d = upgraded_keeping(&ctx, &before).await;
    assert_eq!(table_names(engine, exec).await, TABLES);
    for (id, _) in &endpoints {
        let endpoint = d.endpoint(id).await.expect("endpoint");
        assert_eq!(endpoint.status, EndpointStatus::Active);
        assert_eq!(endpoint.description, "");
        assert!(endpoint.metadata.is_empty() && endpoint.header_names.is_empty());
    }
    let old = d.event("evt_old").await.expect("the old event");
    assert_eq!(old.messages.len(), 1);

    let delivered = delivered_in(&d, DUE.len() + 1).await;
    assert_eq!(
        delivered,
        DUE.len() as u64 + 1,
        "what the old release left due, and its event"
    );
    let got = ctx.receiver.received();
    let from_event = got
        .iter()
        .find(|r| r.headers["webhook-id"] == "msg_evt_old")
        .expect("the old event's message");
    assert_eq!(&from_event.body[..], br#"{"n":8}"#);
    let header = |name: &str| from_event.headers.get(name).and_then(|v| v.to_str().ok());
    verify(&endpoints[0].1, header, &from_event.body).expect("signed with the old endpoint's secret");

    // The lifecycle works on old rows: headers on an old endpoint, deleting the other.
    let update = webhooks_dispatch::UpdateEndpoint {
        headers: Some(webhooks_dispatch::CustomHeaders::new().with("authorization", "Bearer old")),
        ..Default::default()
    };
    let updated = d.update_endpoint(endpoints[0].0, update).await.unwrap();
    assert_eq!(updated.header_names, ["authorization"]);
    let deleted = d.delete_endpoint(endpoints[1].0).await.unwrap();
    assert_eq!(deleted.messages_ended, 0, "nothing of it was left pending");
    assert_eq!(
        d.endpoint(endpoints[1].0).await.unwrap_err().code(),
        "unknown_endpoint"
    );
}

async fn upgrade_from_the_unnumbered_schema_keeps_every_row_and_delivers_what_was_pending(engine: Engine) {
    let (ctx, endpoints, before) = old_database_with_rows(engine).await;
    let d = ctx.dispatcher();
    let started = Utc::now();
    d.migrate().await.expect("upgrade");

    assert_eq!(dump(ctx.exec.as_ref()).await, before, "the upgrade changed a row");
    assert_eq!(table_names(engine, ctx.exec.as_ref()).await, TABLES);
    let records = recorded(ctx.exec.as_ref()).await;
    let names: Vec<(i64, &str)> = records.iter().map(|(v, n, _)| (*v, n.as_str())).collect();
    assert_eq!(
        names[..2],
        [(1, "0001_initial"), (2, "0002_endpoint_queue_index")]
    );
    assert_eq!(names.len(), ctx.exec.statements().migrations.len());
    for (version, _, applied_at) in &records {
        let drift = (*applied_at - started).num_seconds().abs();
        assert!(
            drift < 600,
            "migration {version} applied at {applied_at}, started {started}"
        );
    }
    let index = new_index(engine, ctx.exec.as_ref())
        .await
        .expect("the new index exists");
    assert!(index.contains("(endpoint_id, next_attempt_at, id)"), "{index}");
    assert!(index.contains("status = 'pending'"), "{index}");

    // What the old release left due is delivered by this one, signed with the stored secrets.
    let mut delivered = 0;
    for _ in 0..DUE.len() {
        let report = d.deliver_due(DeliverDue::default()).await.expect("deliver");
        assert_eq!(report.attempted, report.delivered, "{report:?}");
        delivered += report.delivered;
    }
    assert_eq!(delivered, DUE.len() as u64);
    let received = ctx.receiver.received();
    assert_eq!(received.len(), DUE.len());
    for due in &DUE {
        let got = received
            .iter()
            .find(|r| r.headers["webhook-id"] == due.id)
            .unwrap_or_else(|| panic!("{} was not delivered", due.id));
        assert_eq!(&got.body[..], due.payload.as_bytes());
        let header = |name: &str| got.headers.get(name).and_then(|v| v.to_str().ok());
        verify(&endpoints[due.endpoint].1, header, &got.body).expect("signed with the stored secret");
        let message = d.message(due.id).await.unwrap();
        assert_eq!(message.state, MessageState::Delivered);
        assert_eq!(message.attempts, due.attempts_before + 1);
        let attempts = d.list_attempts(due.id).await.unwrap();
        let last = attempts.last().unwrap();
        assert_eq!(
            (last.attempt_no, last.outcome),
            (due.attempts_before + 1, Outcome::Delivered)
        );
    }

    // The rest is exactly as the old release left it, and every old attempt is still recorded.
    let after = dump(ctx.exec.as_ref()).await;
    assert_eq!(after[0], before[0], "endpoints");
    let settled = |rows: &[Row]| {
        rows.iter()
            .filter(|r| SETTLED.contains(&r.text(0).unwrap().as_str()))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(settled(&after[1]), settled(&before[1]));
    assert_eq!(settled(&before[1]).len(), SETTLED.len());
    for attempt in &before[2] {
        assert!(after[2].contains(attempt), "attempt lost or changed: {attempt:?}");
    }
    assert_eq!(after[2].len(), before[2].len() + DUE.len());
    let report = d.deliver_due(DeliverDue::default()).await.unwrap();
    assert_eq!(report.attempted, 0, "the message scheduled for later was not due");
}

const HELD_BACK: &str = "SELECT count(*) FROM webhooks_dispatch_endpoints
    WHERE consecutive_failures <> 0 OR blocked_until IS NOT NULL";

// 0005 (holding back failing endpoints) on a database made by the release before it: every row stays, no
// endpoint starts held back, what was pending is delivered, and an old endpoint that then fails three times
// in a row is held back for a new message.
async fn upgrade_from_schema_4_keeps_every_row_and_starts_every_endpoint_unheld(engine: Engine) {
    let ctx = made_by_release(engine, 4).await;
    let endpoints = seed_old_rows(&ctx, engine).await;
    let exec = ctx.exec.as_ref();
    let before = dump(exec).await;

    let d = upgraded_keeping(&ctx, &before).await;
    assert_eq!(
        ctx.scalar(HELD_BACK, &[]).await,
        0,
        "an endpoint started held back"
    );
    let delivered = delivered_in(&d, DUE.len() + 1).await;
    assert_eq!(delivered, DUE.len() as u64, "what the old release left due");

    ctx.receiver
        .set_default_reply(webhooks_dispatch_testkit::receiver::Reply::status(503));
    let old = endpoints[0].0;
    for i in 0..3 {
        let m = webhooks_dispatch::NewMessage::new(old, "invoice.paid", i).idempotency_key(format!("k{i}"));
        d.dispatch(m).await.expect("dispatch to an old endpoint");
    }
    assert_eq!(d.deliver_due(DeliverDue::default()).await.unwrap().retried, 3);
    assert_eq!(ctx.scalar(HELD_BACK, &[]).await, 1);
    let new = d
        .dispatch(webhooks_dispatch::NewMessage::new(old, "invoice.paid", 9))
        .await
        .unwrap()
        .message_id;
    assert_eq!(d.deliver_due(DeliverDue::default()).await.unwrap().attempted, 0);
    assert_eq!(d.message(&new).await.unwrap().attempts, 0);
}

// 0006 (endpoint keys) on a database made by the release before it: every row stays (each endpoint's secret
// now its one current key, still plaintext), what was pending is delivered signed with the old secrets,
// `rekey` seals every key, and the old endpoints rotate like new ones.
async fn upgrade_from_schema_5_makes_each_secret_the_current_key_that_signs_and_rekey_seals_it(
    engine: Engine,
) {
    let ctx = made_by_release(engine, 5).await;
    let endpoints = seed_old_rows(&ctx, engine).await;
    let exec = ctx.exec.as_ref();
    let before = dump(exec).await;

    let d = upgraded_keeping(&ctx, &before).await;
    for (id, _) in &endpoints {
        let keys = d.endpoint_keys(id).await.expect("keys of an old endpoint");
        assert_eq!(keys.len(), 1);
        assert_eq!(
            keys[0].algorithm,
            webhooks_dispatch::signing::SignatureScheme::HmacSha256
        );
        assert_eq!(keys[0].not_before, d.endpoint(id).await.unwrap().created_at);
        assert_eq!(keys[0].not_after, None);
    }
    let delivered = delivered_in(&d, DUE.len() + 1).await;
    assert_eq!(delivered, DUE.len() as u64, "what the old release left due");
    for got in ctx.receiver.received() {
        let due = DUE
            .iter()
            .find(|m| got.headers["webhook-id"] == m.id)
            .expect("an old message");
        let header = |name: &str| got.headers.get(name).and_then(|v| v.to_str().ok());
        verify(&endpoints[due.endpoint].1, header, &got.body).expect("signed with its old secret");
    }

    let report = d.rekey(None).await.expect("rekey");
    assert_eq!((report.examined, report.resealed), (2, 2));
    let sealed = rows(
        exec,
        "SELECT count(*) FROM webhooks_dispatch_endpoint_keys WHERE secret LIKE 'wdenc1.%'",
        &[],
    )
    .await;
    assert_eq!(sealed[0].int(0).unwrap(), 2, "every key sealed");
    let rotated = d
        .rotate_secret(endpoints[0].0, webhooks_dispatch::RotateSecret::default())
        .await
        .expect("rotate an old endpoint");
    assert!(rotated.secret.is_some());
    assert_eq!(d.endpoint_keys(endpoints[0].0).await.unwrap().len(), 2);
}
