use std::collections::HashMap;

use webhooks_dispatch::store::Value;
use webhooks_dispatch::{
    verify, DeliverDue, DisabledReason, DispatchError, EndpointSecret, EndpointStatus, ListEndpoints,
    MessageState, NewEndpoint, NewEvent, NewMessage, OnGone, Outcome, SkipReason,
};

use crate::conformance;
use webhooks_dispatch_testkit::receiver::Reply;

use crate::support::{Ctx, Engine, Exec};

conformance!(
    an_event_fans_out_to_each_subscribed_active_endpoint_of_its_owner_signed_with_each_secret,
    the_payload_is_stored_once_per_event_however_many_endpoints,
    event_idempotency_is_per_owner_and_a_different_event_under_the_key_is_a_conflict,
    an_event_that_matches_no_endpoint_is_recorded_with_no_messages,
    dispatch_events_is_all_or_nothing_and_a_key_repeated_in_a_batch_is_one_event,
    a_disabled_endpoint_refuses_new_messages_and_keeps_its_backlog_until_enabled,
    an_unknown_event_is_a_typed_404,
    a_410_gone_kills_the_message_and_disables_the_endpoint_with_reason_gone,
    with_on_gone_dead_a_410_only_kills_the_message,
    list_endpoints_pages_by_id_filters_by_owner_and_status_and_new_ones_come_last,
);

type D = webhooks_dispatch::Dispatcher<Exec>;

/// Registers an endpoint for `owner` on the test receiver; returns its id and secret.
async fn endpoint(ctx: &Ctx, d: &D, owner: &str, types: &[&str]) -> (String, EndpointSecret) {
    let mut input = NewEndpoint::new(owner, ctx.url());
    if !types.is_empty() {
        input = input.event_types(types.iter().copied());
    }
    let ep = d.register_endpoint(input).await.expect("register");
    (ep.id, ep.secret.expect("an HMAC endpoint"))
}

async fn count(ctx: &Ctx, sql: &'static str) -> i64 {
    ctx.scalar(sql, &[]).await
}

async fn deliver_all(d: &D) -> u64 {
    let mut delivered = 0;
    loop {
        let report = d.deliver_due(DeliverDue::default()).await.expect("deliver");
        assert_eq!(report.attempted, report.delivered, "{report:?}");
        if report.attempted == 0 {
            return delivered;
        }
        delivered += report.delivered;
    }
}

async fn an_event_fans_out_to_each_subscribed_active_endpoint_of_its_owner_signed_with_each_secret(
    engine: Engine,
) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let all = endpoint(&ctx, &d, "acme", &[]).await;
    let paid = endpoint(&ctx, &d, "acme", &["invoice.paid", "order.created"]).await;
    let orders = endpoint(&ctx, &d, "acme", &["order.created"]).await;
    let disabled = endpoint(&ctx, &d, "acme", &[]).await;
    let stranger = endpoint(&ctx, &d, "globex", &[]).await;
    d.disable_endpoint(&disabled.0).await.expect("disable");

    let payload = serde_json::json!({"invoice": "in_1", "amount": 1200, "note": "héllo \"world\""});
    let sent = d
        .dispatch_event(NewEvent::new("acme", "invoice.paid", payload.clone()))
        .await
        .expect("dispatch_event");
    assert!(sent.event_id.starts_with("evt_") && sent.created);
    let mut expected = vec![all.0.clone(), paid.0.clone()];
    expected.sort();
    let targets: Vec<String> = sent.messages.iter().map(|m| m.endpoint_id.clone()).collect();
    assert_eq!(
        targets, expected,
        "subscribed and active endpoints of the owner only"
    );
    assert_eq!(sent.skipped.len(), 1);
    assert_eq!(sent.skipped[0].endpoint_id, disabled.0);
    assert_eq!(sent.skipped[0].reason, SkipReason::EndpointDisabled);
    assert_eq!(sent.skipped[0].disabled_reason, Some(DisabledReason::Manual));
    let ids: Vec<&str> = sent.messages.iter().map(|m| m.message_id.as_str()).collect();
    assert!(ids.iter().all(|id| id.starts_with("msg_")));
    assert_ne!(ids[0], ids[1], "each message has its own webhook-id");

    // The event reads back the same way, with its exact payload.
    let stored = d.event(&sent.event_id).await.expect("event");
    assert_eq!(
        (stored.owner_id.as_str(), stored.event_type.as_str()),
        ("acme", "invoice.paid")
    );
    assert_eq!(stored.payload, serde_json::to_string(&payload).unwrap());
    assert_eq!(
        (stored.messages.clone(), stored.skipped.clone()),
        (sent.messages.clone(), sent.skipped.clone())
    );

    // Delivery: one request per message, each signed with its own endpoint's secret over the same bytes.
    assert_eq!(deliver_all(&d).await, 2);
    let secrets: HashMap<String, EndpointSecret> =
        [all, paid, orders, disabled, stranger].into_iter().collect();
    let received = ctx.receiver.received();
    assert_eq!(
        received.len(),
        2,
        "nothing to the unsubscribed, disabled or other owner's endpoints"
    );
    for m in &sent.messages {
        let got = received
            .iter()
            .find(|r| r.headers["webhook-id"] == m.message_id.as_str())
            .unwrap_or_else(|| panic!("{} was not delivered", m.message_id));
        assert_eq!(&got.body[..], stored.payload.as_bytes());
        let header = |name: &str| got.headers.get(name).and_then(|v| v.to_str().ok());
        verify(&secrets[&m.endpoint_id], header, &got.body).expect("signed with its endpoint's secret");
        for (other, secret) in &secrets {
            if other != &m.endpoint_id {
                assert!(
                    verify(secret, header, &got.body).is_err(),
                    "signed with another endpoint's secret"
                );
            }
        }
        let message = d.message(&m.message_id).await.unwrap();
        assert_eq!(
            (message.state, message.endpoint_id.as_str()),
            (MessageState::Delivered, m.endpoint_id.as_str())
        );
        assert_eq!(message.event_type, "invoice.paid");
    }
}

async fn the_payload_is_stored_once_per_event_however_many_endpoints(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    for _ in 0..5 {
        endpoint(&ctx, &d, "acme", &[]).await;
    }
    let big = "x".repeat(10_000);
    let sent = d
        .dispatch_event(NewEvent::new(
            "acme",
            "report.ready",
            serde_json::json!({ "blob": big }),
        ))
        .await
        .unwrap();
    assert_eq!(sent.messages.len(), 5);
    let stored = count(
        &ctx,
        "SELECT count(*) FROM webhooks_dispatch_events WHERE length(payload) > 10000",
    )
    .await;
    assert_eq!(stored, 1, "one copy on the event");
    let copies = count(
        &ctx,
        "SELECT count(*) FROM webhooks_dispatch_outbox WHERE length(payload) > 0",
    )
    .await;
    assert_eq!(copies, 0, "no copy on the messages");
    assert_eq!(deliver_all(&d).await, 5);
    for r in ctx.receiver.received() {
        assert_eq!(r.body.len(), big.len() + r#"{"blob":""}"#.len());
    }
}

async fn event_idempotency_is_per_owner_and_a_different_event_under_the_key_is_a_conflict(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    endpoint(&ctx, &d, "acme", &[]).await;
    endpoint(&ctx, &d, "acme", &[]).await;
    endpoint(&ctx, &d, "globex", &[]).await;
    let event = |owner: &str, n: i64| {
        NewEvent::new(owner, "invoice.paid", serde_json::json!({ "n": n })).idempotency_key("k-1")
    };

    let first = d.dispatch_event(event("acme", 1)).await.unwrap();
    assert!(first.created);
    let again = d.dispatch_event(event("acme", 1)).await.unwrap();
    assert!(!again.created);
    assert_eq!(
        (again.event_id.as_str(), &again.messages),
        (first.event_id.as_str(), &first.messages)
    );
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM webhooks_dispatch_events").await,
        1
    );
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM webhooks_dispatch_outbox").await,
        2
    );

    let err = d.dispatch_event(event("acme", 2)).await.unwrap_err();
    assert_eq!((err.code(), err.http_status()), ("idempotency_conflict", 409));
    let other_type =
        NewEvent::new("acme", "invoice.voided", serde_json::json!({ "n": 1 })).idempotency_key("k-1");
    assert_eq!(
        d.dispatch_event(other_type).await.unwrap_err().code(),
        "idempotency_conflict"
    );

    // The key is the owner's: another owner's same key is another event.
    let globex = d.dispatch_event(event("globex", 1)).await.unwrap();
    assert!(globex.created && globex.event_id != first.event_id);
    assert_eq!(globex.messages.len(), 1);
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM webhooks_dispatch_events").await,
        2
    );
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM webhooks_dispatch_outbox").await,
        3
    );
}

async fn an_event_that_matches_no_endpoint_is_recorded_with_no_messages(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    endpoint(&ctx, &d, "acme", &["order.created"]).await;
    let sent = d
        .dispatch_event(NewEvent::new("acme", "invoice.paid", 1))
        .await
        .unwrap();
    assert!(sent.created && sent.messages.is_empty() && sent.skipped.is_empty());
    let nobody = d
        .dispatch_event(NewEvent::new("nobody", "invoice.paid", 2))
        .await
        .unwrap();
    assert!(nobody.messages.is_empty());
    let stored = d.event(&sent.event_id).await.unwrap();
    assert_eq!(stored.payload, "1");
    assert!(stored.messages.is_empty());
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM webhooks_dispatch_outbox").await,
        0
    );
}

async fn dispatch_events_is_all_or_nothing_and_a_key_repeated_in_a_batch_is_one_event(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    endpoint(&ctx, &d, "acme", &[]).await;
    endpoint(&ctx, &d, "globex", &[]).await;
    d.dispatch_event(NewEvent::new("acme", "a", 1).idempotency_key("held"))
        .await
        .unwrap();

    let batch = vec![
        NewEvent::new("acme", "a", 10),
        NewEvent::new("globex", "a", 11),
        NewEvent::new("acme", "a", 12).idempotency_key("held"),
    ];
    match d.dispatch_events(batch).await.unwrap_err() {
        DispatchError::InBatch { index: 2, error } => assert_eq!(error.code(), "idempotency_conflict"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM webhooks_dispatch_events").await,
        1,
        "nothing of the batch"
    );
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM webhooks_dispatch_outbox").await,
        1
    );

    let batch = vec![
        NewEvent::new("acme", "a", 20).idempotency_key("twice"),
        NewEvent::new("globex", "a", 21),
        NewEvent::new("acme", "a", 20).idempotency_key("twice"),
        NewEvent::new("acme", "a", 1).idempotency_key("held"),
    ];
    let sent = d.dispatch_events(batch).await.unwrap();
    assert_eq!(sent.len(), 4);
    assert!(sent[0].created && sent[1].created);
    assert_eq!(
        sent[2].event_id, sent[0].event_id,
        "a key repeated in the batch is one event"
    );
    assert_eq!(sent[2].messages, sent[0].messages);
    assert!(!sent[3].created, "an earlier event under the key is returned");
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM webhooks_dispatch_events").await,
        3
    );
    assert_eq!(
        count(&ctx, "SELECT count(*) FROM webhooks_dispatch_outbox").await,
        3
    );

    let too_many: Vec<_> = (0..1001).map(|i| NewEvent::new("acme", "a", i)).collect();
    assert_eq!(
        d.dispatch_events(too_many).await.unwrap_err().code(),
        "invalid_input"
    );
    let invalid = vec![NewEvent::new("acme", "a", 1), NewEvent::new("acme", " ", 2)];
    match d.dispatch_events(invalid).await.unwrap_err() {
        DispatchError::InBatch { index: 1, error } => assert_eq!(error.code(), "invalid_input"),
        other => panic!("{other:?}"),
    }
}

async fn a_disabled_endpoint_refuses_new_messages_and_keeps_its_backlog_until_enabled(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let (ep, _) = endpoint(&ctx, &d, "acme", &[]).await;
    let (other, _) = endpoint(&ctx, &d, "acme", &[]).await;
    let mut backlog = Vec::new();
    for i in 0..3 {
        backlog.push(d.dispatch(NewMessage::new(&ep, "a", i)).await.unwrap().message_id);
    }
    // One of them has a retry scheduled far ahead: enabling makes it due at once.
    let later = chrono::Utc::now() + chrono::Duration::hours(6);
    ctx.exec
        .query(
            "UPDATE webhooks_dispatch_outbox SET next_attempt_at = $1 WHERE id = $2",
            &[Value::from(later), Value::from(backlog[2].as_str())],
        )
        .await
        .unwrap();

    let disabled = d.disable_endpoint(&ep).await.unwrap();
    assert_eq!(disabled.status, EndpointStatus::Disabled);
    assert_eq!(disabled.disabled_reason, Some(DisabledReason::Manual));
    let at = disabled.disabled_at.expect("disabled_at");
    assert_eq!(
        d.disable_endpoint(&ep).await.unwrap().disabled_at,
        Some(at),
        "the first time stands"
    );
    assert_eq!(d.endpoint(&ep).await.unwrap(), disabled);

    let err = d.dispatch(NewMessage::new(&ep, "a", 9)).await.unwrap_err();
    assert_eq!((err.code(), err.http_status()), ("endpoint_disabled", 409));
    let batch = vec![NewMessage::new(&other, "a", 1), NewMessage::new(&ep, "a", 2)];
    match d.dispatch_many(batch).await.unwrap_err() {
        DispatchError::InBatch { index: 1, error } => assert_eq!(error.code(), "endpoint_disabled"),
        other => panic!("{other:?}"),
    }
    d.dispatch(NewMessage::new(&other, "a", 3)).await.unwrap();

    // Only the active endpoint is delivered to; the disabled one's messages wait, unattempted.
    assert_eq!(deliver_all(&d).await, 1);
    for id in &backlog {
        let m = d.message(id).await.unwrap();
        assert_eq!((m.state, m.attempts), (MessageState::Pending, 0), "{id}");
    }
    assert_eq!(
        d.queue_stats(None).await.unwrap().due,
        0,
        "a disabled backlog is not due"
    );

    let enabled = d.enable_endpoint(&ep).await.unwrap();
    assert_eq!(
        (enabled.status, enabled.disabled_reason, enabled.disabled_at),
        (EndpointStatus::Active, None, None)
    );
    assert_eq!(
        deliver_all(&d).await,
        3,
        "the whole backlog, the later retry included, is due at once"
    );
    for id in &backlog {
        let m = d.message(id).await.unwrap();
        assert_eq!((m.state, m.attempts), (MessageState::Delivered, 1), "{id}");
    }
    d.dispatch(NewMessage::new(&ep, "a", 4))
        .await
        .expect("accepted again");
    assert_eq!(
        d.disable_endpoint("ep_nope").await.unwrap_err().code(),
        "unknown_endpoint"
    );
    assert_eq!(
        d.enable_endpoint("ep_nope").await.unwrap_err().code(),
        "unknown_endpoint"
    );
}

async fn an_unknown_event_is_a_typed_404(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let err = ctx.dispatcher().event("evt_nope").await.unwrap_err();
    assert_eq!((err.code(), err.http_status()), ("unknown_event", 404));
    assert_eq!(
        ctx.dispatcher().event(" ").await.unwrap_err().code(),
        "invalid_input"
    );
}

/// Two endpoints on one receiver that answers the first request 410 and everything after 200; three messages
/// to the first endpoint and one to the second, delivered one at a time so the 410 comes first.
async fn gone_run(ctx: &Ctx, d: &D) -> (String, String, Vec<String>) {
    let (gone, _) = endpoint(ctx, d, "acme", &[]).await;
    let (fine, _) = endpoint(ctx, d, "acme", &[]).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            d.dispatch(NewMessage::new(&gone, "a", i))
                .await
                .unwrap()
                .message_id,
        );
    }
    ctx.receiver.push_replies([Reply::status(410)]);
    let one = DeliverDue {
        batch: Some(1),
        ..DeliverDue::default()
    };
    let report = d.deliver_due(one).await.unwrap();
    assert_eq!((report.attempted, report.dead), (1, 1), "{report:?}");
    d.dispatch(NewMessage::new(&fine, "a", 9)).await.unwrap();
    (gone, fine, ids)
}

async fn a_410_gone_kills_the_message_and_disables_the_endpoint_with_reason_gone(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let (gone, fine, ids) = gone_run(&ctx, &d).await;

    let first = d.message(&ids[0]).await.unwrap();
    assert_eq!((first.state, first.attempts), (MessageState::Dead, 1));
    let attempt = d.list_attempts(&ids[0]).await.unwrap().pop().unwrap();
    assert_eq!((attempt.status_code, attempt.outcome), (Some(410), Outcome::Dead));
    let endpoint = d.endpoint(&gone).await.unwrap();
    assert_eq!(endpoint.status, EndpointStatus::Disabled);
    assert_eq!(endpoint.disabled_reason, Some(DisabledReason::Gone));
    assert_eq!(
        endpoint.disabled_at,
        Some(attempt.attempted_at),
        "disabled when the 410 was recorded"
    );

    // Its other messages wait unattempted; the other endpoint is unaffected; nothing new is accepted.
    assert_eq!(deliver_all(&d).await, 1, "only the other endpoint's message");
    for id in &ids[1..] {
        let m = d.message(id).await.unwrap();
        assert_eq!((m.state, m.attempts), (MessageState::Pending, 0), "{id}");
    }
    assert_eq!(d.endpoint(&fine).await.unwrap().status, EndpointStatus::Active);
    let err = d.dispatch(NewMessage::new(&gone, "a", 5)).await.unwrap_err();
    assert_eq!(err.code(), "endpoint_disabled");
    let sent = d.dispatch_event(NewEvent::new("acme", "a", 6)).await.unwrap();
    assert_eq!(sent.skipped.len(), 1);
    assert_eq!(sent.skipped[0].disabled_reason, Some(DisabledReason::Gone));

    // Enabled again by an operator, the waiting messages go out.
    d.enable_endpoint(&gone).await.unwrap();
    assert_eq!(
        deliver_all(&d).await,
        3,
        "the two waiting messages and the event's message"
    );
}

async fn with_on_gone_dead_a_410_only_kills_the_message(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.builder().on_gone(OnGone::Dead).build();
    let (gone, _, ids) = gone_run(&ctx, &d).await;
    assert_eq!(d.message(&ids[0]).await.unwrap().state, MessageState::Dead);
    let endpoint = d.endpoint(&gone).await.unwrap();
    assert_eq!(
        (endpoint.status, endpoint.disabled_reason),
        (EndpointStatus::Active, None)
    );
    assert_eq!(
        deliver_all(&d).await,
        3,
        "the endpoint's other messages and the other endpoint's"
    );
}

async fn list_endpoints_pages_by_id_filters_by_owner_and_status_and_new_ones_come_last(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let mut acme = Vec::new();
    for i in 0..7 {
        acme.push(endpoint(&ctx, &d, "acme", &[]).await.0);
        if i % 3 == 0 {
            endpoint(&ctx, &d, "globex", &[]).await;
        }
    }
    d.disable_endpoint(&acme[2]).await.unwrap();
    d.disable_endpoint(&acme[5]).await.unwrap();

    // Three pages of three for acme; an endpoint registered between pages shows up on a later one.
    let page = |cursor: Option<String>| ListEndpoints {
        owner_id: Some("acme".to_owned()),
        limit: Some(3),
        cursor,
        ..ListEndpoints::default()
    };
    let first = d.list_endpoints(page(None)).await.unwrap();
    let late = endpoint(&ctx, &d, "acme", &[]).await.0;
    let second = d.list_endpoints(page(first.next_cursor.clone())).await.unwrap();
    let third = d.list_endpoints(page(second.next_cursor.clone())).await.unwrap();
    assert_eq!(third.next_cursor, None, "the last page says so");
    let seen: Vec<String> = [&first, &second, &third]
        .iter()
        .flat_map(|p| p.data.iter().map(|e| e.id.clone()))
        .collect();
    let mut expected = acme.clone();
    expected.push(late);
    assert_eq!(seen, expected, "every acme endpoint once, in registration order");
    assert!([&first, &second]
        .iter()
        .all(|p| p.data.len() == 3 && p.next_cursor.is_some()));
    assert!(seen.iter().all(|id| id.starts_with("ep_")));

    let disabled = d
        .list_endpoints(ListEndpoints {
            owner_id: Some("acme".to_owned()),
            status: Some(EndpointStatus::Disabled),
            ..ListEndpoints::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = disabled.data.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [acme[2].as_str(), acme[5].as_str()]);
    assert!(disabled
        .data
        .iter()
        .all(|e| e.disabled_reason == Some(DisabledReason::Manual)));

    let everyone = d.list_endpoints(ListEndpoints::default()).await.unwrap();
    assert_eq!(everyone.data.len(), 8 + 3, "all owners");
    assert!(everyone.data.windows(2).all(|w| w[0].id < w[1].id));
    let active = d
        .list_endpoints(ListEndpoints {
            status: Some(EndpointStatus::Active),
            ..ListEndpoints::default()
        })
        .await
        .unwrap();
    assert_eq!(active.data.len(), 11 - 2);

    for limit in [0, 251] {
        let filter = ListEndpoints {
            limit: Some(limit),
            ..ListEndpoints::default()
        };
        assert_eq!(
            d.list_endpoints(filter).await.unwrap_err().code(),
            "invalid_input",
            "{limit}"
        );
    }
    let nobody = ListEndpoints {
        owner_id: Some("nobody".to_owned()),
        ..ListEndpoints::default()
    };
    assert_eq!(
        d.list_endpoints(nobody).await.unwrap(),
        webhooks_dispatch::EndpointPage {
            data: vec![],
            next_cursor: None
        }
    );
}
