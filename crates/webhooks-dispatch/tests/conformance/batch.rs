use webhooks_dispatch::store::Executor as _;
use webhooks_dispatch::{DeliverDue, DispatchError, NewEndpoint, NewMessage, MAX_DISPATCH_MANY};

use crate::conformance;
use crate::support::{Ctx, Engine};

conformance!(
    dispatch_many_inserts_in_order_in_one_statement,
    dispatch_many_keeps_idempotency_within_and_across_batches,
    dispatch_many_is_all_or_nothing,
    coalesced_dispatches_share_inserts_and_each_get_their_own_result,
);

const COUNT_OUTBOX: &str = "SELECT count(*) FROM webhooks_dispatch_outbox";

async fn dispatch_many_inserts_in_order_in_one_statement(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let exec = crate::support::CountingExecutor::new(ctx.exec.clone());
    let d = ctx.dispatcher().using(exec.clone());
    let (ep, _) = ctx.endpoint(&d).await;
    let before = exec.count();
    let msgs: Vec<_> = (0..500)
        .map(|i| NewMessage::new(&ep, "a", serde_json::json!({ "i": i })))
        .collect();
    let sent = d.dispatch_many(msgs).await.unwrap();
    // Exactly one insert, plus one NOTIFY where the engine has them (the first in this debounce window).
    let notify = usize::from(exec.statements().notify_due.is_some());
    assert_eq!(
        exec.count() - before,
        1 + notify,
        "{:?}",
        &exec.seen.lock().unwrap()[before..]
    );
    assert_eq!(
        exec.seen.lock().unwrap()[before],
        exec.statements().insert_messages
    );
    assert_eq!(sent.len(), 500);
    assert!(sent.iter().all(|s| s.created));
    assert_eq!(ctx.scalar(COUNT_OUTBOX, &[]).await, 500);
    assert_eq!(d.dispatch_many(Vec::<NewMessage<i32>>::new()).await.unwrap(), []);
    // Results are in input order: deliver and match bodies to ids.
    // A drain takes at most the per-endpoint cap from one endpoint, so drain until nothing is left.
    while d
        .deliver_due(DeliverDue {
            now: None,
            batch: Some(1000),
        })
        .await
        .unwrap()
        .attempted
        > 0
    {}
    for r in ctx.receiver.received() {
        let id = r.headers["webhook-id"].to_str().unwrap();
        let i: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(sent[i["i"].as_u64().unwrap() as usize].message_id, id);
    }
    assert_eq!(ctx.receiver.count(), 500);
}

async fn dispatch_many_keeps_idempotency_within_and_across_batches(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let (ep, _) = ctx.endpoint(&d).await;
    let earlier = d
        .dispatch(NewMessage::new(&ep, "a", 0).idempotency_key("k0"))
        .await
        .unwrap();
    let sent = d
        .dispatch_many(vec![
            NewMessage::new(&ep, "a", 0).idempotency_key("k0"), // seen before
            NewMessage::new(&ep, "a", 2).idempotency_key("k1"),
            NewMessage::new(&ep, "a", 2).idempotency_key("k1"), // repeated in the batch
            NewMessage::new(&ep, "a", 4),
        ])
        .await
        .unwrap();
    assert_eq!(sent[0].message_id, earlier.message_id);
    assert!(!sent[0].created);
    assert!(sent[1].created && !sent[2].created && sent[3].created);
    assert_eq!(sent[1].message_id, sent[2].message_id);
    assert_eq!(ctx.scalar(COUNT_OUTBOX, &[]).await, 3);

    // The same key with another payload or event type is a conflict, not a replay, and nothing is inserted.
    for (msgs, index) in [
        (vec![NewMessage::new(&ep, "a", 9).idempotency_key("k0")], 0),
        (vec![NewMessage::new(&ep, "b", 0).idempotency_key("k0")], 0),
        (
            vec![
                NewMessage::new(&ep, "a", 5).idempotency_key("k9"),
                NewMessage::new(&ep, "a", 6).idempotency_key("k9"),
            ],
            1,
        ),
    ] {
        let err = d.dispatch_many(msgs).await.unwrap_err();
        assert_eq!((err.code(), err.http_status()), ("idempotency_conflict", 409));
        assert!(
            matches!(err, DispatchError::InBatch { index: i, .. } if i == index),
            "{err:?}"
        );
    }
    // A conflict refuses the whole batch: the other, fine messages in it were not inserted either.
    let err = d
        .dispatch_many(vec![
            NewMessage::new(&ep, "a", 7).idempotency_key("fresh"),
            NewMessage::new(&ep, "a", 9).idempotency_key("k0"),
        ])
        .await
        .unwrap_err();
    assert_eq!(err.code(), "idempotency_conflict");
    assert_eq!(ctx.scalar(COUNT_OUTBOX, &[]).await, 3);
}

async fn dispatch_many_is_all_or_nothing(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let ep = d
        .register_endpoint(NewEndpoint::new("o", ctx.url()).event_types(["a"]))
        .await
        .unwrap()
        .id;
    let cases: Vec<(Vec<NewMessage<i32>>, usize, &str)> = vec![
        (
            vec![NewMessage::new(&ep, "a", 1), NewMessage::new("ep_nope", "a", 1)],
            1,
            "unknown_endpoint",
        ),
        (
            vec![NewMessage::new(&ep, "a", 1), NewMessage::new(&ep, "b", 1)],
            1,
            "event_type_not_subscribed",
        ),
        (
            vec![NewMessage::new(&ep, " ", 1), NewMessage::new(&ep, "a", 1)],
            0,
            "invalid_input",
        ),
    ];
    for (msgs, index, code) in cases {
        let err = d.dispatch_many(msgs).await.unwrap_err();
        assert_eq!(err.code(), code);
        assert!(
            matches!(err, DispatchError::InBatch { index: i, .. } if i == index),
            "{err:?}"
        );
    }
    let too_many: Vec<_> = (0..=MAX_DISPATCH_MANY)
        .map(|_| NewMessage::new(&ep, "a", 1))
        .collect();
    assert_eq!(
        d.dispatch_many(too_many).await.unwrap_err().code(),
        "invalid_input"
    );
    assert_eq!(
        ctx.scalar(COUNT_OUTBOX, &[]).await,
        0,
        "a refused batch inserted rows"
    );
}

/// Group commit: concurrent `dispatch` calls on a coalescing dispatcher are written by fewer statements than
/// calls, yet each gets exactly the result it would have had alone — created, an idempotent replay, a
/// conflict, an unknown endpoint, an unsubscribed type — and racing keys still make one row.
async fn coalesced_dispatches_share_inserts_and_each_get_their_own_result(engine: Engine) {
    use std::sync::Arc;
    let ctx = Ctx::new(engine).await;
    let exec = crate::support::CountingExecutor::new(ctx.exec.clone());
    let plain = ctx.dispatcher();
    let ep = plain
        .register_endpoint(NewEndpoint::new("o", ctx.url()).event_types(["a"]))
        .await
        .unwrap()
        .id;
    let earlier = plain
        .dispatch(NewMessage::new(&ep, "a", 0).idempotency_key("earlier"))
        .await
        .unwrap();
    let d =
        webhooks_dispatch::Dispatcher::builder(exec.clone() as Arc<dyn webhooks_dispatch::store::Executor>)
            .coalesce_dispatches()
            .build();
    // What each call sends, and what it must get back.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Expect {
        Created,
        Replay,
        Code(&'static str),
    }
    let mut calls = Vec::new();
    for i in 0..120 {
        calls.push((NewMessage::new(ep.clone(), "a".to_owned(), i), Expect::Created));
    }
    for _ in 0..8 {
        let replay = NewMessage::new(ep.clone(), "a".to_owned(), 0).idempotency_key("earlier");
        calls.push((replay, Expect::Replay));
    }
    let conflict = NewMessage::new(ep.clone(), "a".to_owned(), 99).idempotency_key("earlier");
    calls.push((conflict, Expect::Code("idempotency_conflict")));
    calls.push((
        NewMessage::new("ep_nope".to_owned(), "a".to_owned(), 1),
        Expect::Code("unknown_endpoint"),
    ));
    calls.push((
        NewMessage::new(ep.clone(), "b".to_owned(), 1),
        Expect::Code("event_type_not_subscribed"),
    ));
    let before = exec.count();
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|(msg, expect)| {
            let d = d.clone();
            tokio::spawn(async move { (d.dispatch(msg).await, expect) })
        })
        .collect();
    let mut created = std::collections::HashSet::new();
    for task in tasks {
        let (result, expect) = task.await.unwrap();
        match (result, expect) {
            (Ok(sent), Expect::Created) => {
                assert!(sent.created);
                assert!(created.insert(sent.message_id), "two callers got the same new id");
            }
            (Ok(sent), Expect::Replay) => {
                assert_eq!(
                    (sent.message_id, sent.created),
                    (earlier.message_id.clone(), false)
                );
            }
            (Err(e), Expect::Code(code)) => assert_eq!(e.code(), code, "{e:?}"),
            (got, expect) => panic!("expected {expect:?}, got {got:?}"),
        }
    }
    assert_eq!(
        ctx.scalar(COUNT_OUTBOX, &[]).await,
        121,
        "120 new rows plus the earlier one"
    );
    let inserts = exec.seen.lock().unwrap()[before..]
        .iter()
        .filter(|s| **s == exec.statements().insert_messages || **s == exec.statements().insert_message)
        .count();
    assert!(
        inserts <= 40,
        "{inserts} insert statements for 131 dispatches: nothing was coalesced"
    );

    // Racing dispatches of one key through the coalescer still make exactly one row.
    let racers: Vec<_> = (0..16)
        .map(|_| {
            let d = d.clone();
            let ep = ep.clone();
            tokio::spawn(async move {
                d.dispatch(NewMessage::new(&ep, "a", 7).idempotency_key("race"))
                    .await
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    let mut new_rows = 0;
    for racer in racers {
        let sent = racer.await.unwrap().unwrap();
        new_rows += usize::from(sent.created);
        ids.insert(sent.message_id);
    }
    assert_eq!((ids.len(), new_rows), (1, 1));
    // Through `using` (a caller's transaction) nothing is coalesced: one statement per dispatch.
    let direct = d.using(exec.clone());
    let before = exec.count();
    direct.dispatch(NewMessage::new(&ep, "a", 8)).await.unwrap();
    assert_eq!(
        exec.seen.lock().unwrap()[before],
        exec.statements().insert_message
    );
}
