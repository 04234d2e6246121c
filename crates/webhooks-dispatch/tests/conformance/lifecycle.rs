use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use webhooks_dispatch::{
    CustomHeaders, DeliverDue, DisabledReason, EndpointStatus, LifecycleEvent, ListEndpoints, MessageState,
    NewEndpoint, NewEvent, NewMessage, Observer, RetryPolicy, UpdateEndpoint,
};
use webhooks_dispatch_testkit::receiver::Reply;

use crate::conformance;
use crate::support::{t0, Ctx, Engine, Exec, ManualClock};

conformance!(
    update_endpoint_changes_only_what_is_given_and_vets_a_new_url_again,
    pending_messages_go_to_the_new_url_from_their_next_attempt,
    invariant7_custom_headers_are_sent_on_every_attempt_and_never_read_back,
    reserved_or_malformed_custom_headers_are_refused_before_any_sql,
    a_deleted_endpoint_behaves_as_unknown_and_its_pending_messages_end_dead,
    an_endpoint_failing_without_a_delivery_for_the_limit_is_disabled_as_failing,
    a_delivery_resets_the_failure_clock_and_none_turns_auto_disable_off,
    lifecycle_changes_are_reported_to_the_observer_once_each,
    updates_with_and_without_each_field_work_on_every_pooled_connection,
);

type D = webhooks_dispatch::Dispatcher<Exec>;

/// Every lifecycle event, as text.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Observer for Recorder {
    fn lifecycle(&self, event: &LifecycleEvent<'_>) {
        let line = match event {
            LifecycleEvent::EndpointCreated { endpoint_id, .. } => format!("created {endpoint_id}"),
            LifecycleEvent::EndpointUpdated { endpoint_id, .. } => format!("updated {endpoint_id}"),
            LifecycleEvent::EndpointDisabled {
                endpoint_id, reason, ..
            } => format!("disabled {endpoint_id} {}", reason.as_str()),
            LifecycleEvent::EndpointEnabled { endpoint_id, .. } => format!("enabled {endpoint_id}"),
            LifecycleEvent::EndpointDeleted { endpoint_id, .. } => format!("deleted {endpoint_id}"),
            LifecycleEvent::MessageDead { message_id, .. } => format!("dead {message_id}"),
            _ => "other".to_owned(),
        };
        self.0.lock().unwrap().push(line);
    }
}

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

async fn deliver(d: &D) -> webhooks_dispatch::DeliveryReport {
    d.deliver_due(DeliverDue::default()).await.expect("deliver")
}

async fn update_endpoint_changes_only_what_is_given_and_vets_a_new_url_again(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let input = NewEndpoint::new("acme", ctx.url())
        .event_types(["a"])
        .description("billing");
    let id = d.register_endpoint(input).await.unwrap().id;

    let metadata = BTreeMap::from([("team".to_owned(), "payments".to_owned())]);
    let update = UpdateEndpoint {
        metadata: Some(metadata.clone()),
        event_types: Some(vec!["b".into(), "a".into()]),
        ..UpdateEndpoint::default()
    };
    let updated = d.update_endpoint(&id, update).await.unwrap();
    assert_eq!(updated.metadata, metadata);
    assert_eq!(updated.event_types, ["a", "b"], "normalized like a registration");
    assert_eq!(updated.description, "billing", "left as it was");
    assert_eq!(updated.url, ctx.url());
    assert_eq!(d.endpoint(&id).await.unwrap(), updated);

    // A new URL passes the same checks as at registration; a refused one changes nothing.
    for bad in [
        "http://receiver.test/hook",
        "https://10.0.0.1/hook",
        "https://127.0.0.2/x",
    ] {
        let update = UpdateEndpoint {
            url: Some(bad.to_owned()),
            description: Some("changed".into()),
            ..UpdateEndpoint::default()
        };
        let err = d.update_endpoint(&id, update).await.unwrap_err();
        assert_eq!(err.code(), "invalid_url", "{bad}");
    }
    assert_eq!(
        d.endpoint(&id).await.unwrap(),
        updated,
        "refused updates wrote nothing"
    );

    let err = d
        .update_endpoint("ep_missing", UpdateEndpoint::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unknown_endpoint");
    let long = UpdateEndpoint {
        description: Some("x".repeat(1025)),
        ..UpdateEndpoint::default()
    };
    assert_eq!(
        d.update_endpoint(&id, long).await.unwrap_err().code(),
        "invalid_input"
    );
}

async fn pending_messages_go_to_the_new_url_from_their_next_attempt(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let clock = ManualClock::at(t0());
    let d = ctx.dispatcher_at(clock.clone(), RetryPolicy::default());
    let (id, _) = ctx.endpoint(&d).await;
    let msg = d.dispatch(NewMessage::new(&id, "a", 1)).await.unwrap().message_id;
    ctx.receiver.push_replies([Reply::status(503)]);
    assert_eq!(deliver(&d).await.retried, 1);

    let moved = ctx.url().replace("/hook", "/moved?v=2");
    let update = UpdateEndpoint {
        url: Some(moved.clone()),
        ..UpdateEndpoint::default()
    };
    assert_eq!(d.update_endpoint(&id, update).await.unwrap().url, moved);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(deliver(&d).await.delivered, 1);
    let paths: Vec<String> = ctx.receiver.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/hook", "/moved?v=2"]);
    let m = d.message(&msg).await.unwrap();
    assert_eq!((m.state, m.attempts), (MessageState::Delivered, 2));
}

async fn invariant7_custom_headers_are_sent_on_every_attempt_and_never_read_back(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let clock = ManualClock::at(t0());
    let d = ctx.dispatcher_at(clock.clone(), RetryPolicy::default());
    let headers = CustomHeaders::new()
        .with("Authorization", "Bearer hunter2-token")
        .with("X-Tenant", "acme");
    let input = NewEndpoint::new("acme", ctx.url()).headers(headers);
    let id = d.register_endpoint(input).await.unwrap().id;
    let msg = d.dispatch(NewMessage::new(&id, "a", 1)).await.unwrap().message_id;
    ctx.receiver.push_replies([Reply::status(500)]);
    deliver(&d).await;
    clock.advance(Duration::from_secs(3600));
    assert_eq!(deliver(&d).await.delivered, 1);

    let received = ctx.receiver.received();
    assert_eq!(received.len(), 2);
    for r in &received {
        assert_eq!(r.headers["authorization"], "Bearer hunter2-token");
        assert_eq!(r.headers["x-tenant"], "acme");
        assert_eq!(r.headers.get_all("content-type").iter().count(), 1);
        assert!(r.headers.contains_key("webhook-signature"));
    }

    let endpoint = d.endpoint(&id).await.unwrap();
    assert_eq!(endpoint.header_names, ["authorization", "x-tenant"]);
    let listed = d.list_endpoints(ListEndpoints::default()).await.unwrap();
    let shown = format!(
        "{endpoint:?} {listed:?} {:?}",
        d.list_attempts(&msg).await.unwrap()
    );
    assert!(
        !shown.contains("hunter2"),
        "a header value was read back: {shown}"
    );
    let json = serde_json::to_string(&endpoint).unwrap();
    assert!(!json.contains("hunter2"), "{json}");

    // New headers replace the old set; an empty set removes them.
    let update = UpdateEndpoint {
        headers: Some(CustomHeaders::new()),
        ..UpdateEndpoint::default()
    };
    assert!(d
        .update_endpoint(&id, update)
        .await
        .unwrap()
        .header_names
        .is_empty());
    d.dispatch(NewMessage::new(&id, "a", 2)).await.unwrap();
    assert_eq!(deliver(&d).await.delivered, 1);
    let last = ctx.receiver.received().pop().unwrap();
    assert!(!last.headers.contains_key("authorization"));
}

async fn reserved_or_malformed_custom_headers_are_refused_before_any_sql(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    for name in [
        "webhook-signature",
        "Content-Type",
        "host",
        "Transfer-Encoding",
        "bad header",
    ] {
        let input =
            NewEndpoint::new("acme", ctx.url()).headers(CustomHeaders::new().with(name, "secret-value"));
        let err = d.register_endpoint(input).await.unwrap_err();
        assert_eq!(err.code(), "invalid_input", "{name}");
        assert!(!err.to_string().contains("secret-value"), "{err}");
    }
    let (id, _) = ctx.endpoint(&d).await;
    let update = UpdateEndpoint {
        headers: Some(CustomHeaders::new().with("x-ok", "line\nbreak")),
        ..UpdateEndpoint::default()
    };
    assert_eq!(
        d.update_endpoint(&id, update).await.unwrap_err().code(),
        "invalid_input"
    );
    let endpoints = d.list_endpoints(ListEndpoints::default()).await.unwrap();
    assert_eq!(endpoints.data.len(), 1, "only the valid registration wrote a row");
}

async fn a_deleted_endpoint_behaves_as_unknown_and_its_pending_messages_end_dead(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let (id, _) = ctx.endpoint(&d).await;
    let (other, _) = ctx.endpoint(&d).await;
    let delivered = d.dispatch(NewMessage::new(&id, "a", 0)).await.unwrap().message_id;
    assert_eq!(deliver(&d).await.delivered, 1);
    let mut waiting = Vec::new();
    for i in 1..=2 {
        waiting.push(d.dispatch(NewMessage::new(&id, "a", i)).await.unwrap().message_id);
    }
    d.dispatch(NewMessage::new(&other, "a", 9)).await.unwrap();

    let deleted = d.delete_endpoint(&id).await.unwrap();
    assert_eq!((deleted.id.as_str(), deleted.messages_ended), (id.as_str(), 2));
    for m in &waiting {
        let m = d.message(m).await.unwrap();
        assert_eq!(
            (m.state, m.attempts),
            (MessageState::Dead, 0),
            "ended, never attempted"
        );
        assert_eq!(
            m.dead_reason,
            Some(webhooks_dispatch::DeadReason::EndpointDeleted)
        );
    }
    // Its history stays readable.
    let kept = d.message(&delivered).await.unwrap();
    assert_eq!((kept.state, kept.dead_reason), (MessageState::Delivered, None));
    assert_eq!(d.list_attempts(&delivered).await.unwrap().len(), 1);

    // Everything else treats it as unknown.
    assert_eq!(d.endpoint(&id).await.unwrap_err().code(), "unknown_endpoint");
    let err = d.dispatch(NewMessage::new(&id, "a", 3)).await.unwrap_err();
    assert_eq!((err.code(), err.http_status()), ("unknown_endpoint", 404));
    let many = d
        .dispatch_many(vec![NewMessage::new(&id, "a", 3)])
        .await
        .unwrap_err();
    assert_eq!(many.code(), "unknown_endpoint");
    assert_eq!(
        d.disable_endpoint(&id).await.unwrap_err().code(),
        "unknown_endpoint"
    );
    assert_eq!(
        d.enable_endpoint(&id).await.unwrap_err().code(),
        "unknown_endpoint"
    );
    let update = d.update_endpoint(&id, UpdateEndpoint::default()).await;
    assert_eq!(update.unwrap_err().code(), "unknown_endpoint");
    assert_eq!(
        d.delete_endpoint(&id).await.unwrap_err().code(),
        "unknown_endpoint"
    );
    let listed = d.list_endpoints(ListEndpoints::default()).await.unwrap();
    assert_eq!(
        listed.data.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        [other.as_str()]
    );
    let sent = d.dispatch_event(NewEvent::new("owner_1", "a", 4)).await.unwrap();
    assert_eq!(sent.messages.len(), 1, "only the other endpoint");
    assert!(sent.skipped.is_empty(), "a deleted endpoint is not a skip");

    let report = deliver(&d).await;
    assert_eq!(
        (report.attempted, report.delivered),
        (2, 2),
        "only the other endpoint's messages"
    );
}

/// A dispatcher on a manual clock whose receiver refuses everything with 400 (a permanent failure, so each
/// message goes dead at its first attempt).
fn failing_setup(ctx: &Ctx, after: Option<Duration>) -> (D, Arc<ManualClock>, Arc<Recorder>) {
    ctx.receiver.set_default_reply(Reply::status(400));
    let clock = ManualClock::at(t0());
    let recorder = Arc::new(Recorder::default());
    let d = ctx
        .builder()
        .clock(clock.clone())
        .observer(recorder.clone())
        .disable_failing_after(after)
        .build();
    (d, clock, recorder)
}

const DAY: Duration = Duration::from_secs(24 * 3600);

async fn send_one(d: &D, endpoint: &str) -> webhooks_dispatch::DeliveryReport {
    d.dispatch(NewMessage::new(endpoint, "a", 1)).await.unwrap();
    deliver(d).await
}

async fn an_endpoint_failing_without_a_delivery_for_the_limit_is_disabled_as_failing(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let (d, clock, recorder) = failing_setup(&ctx, Some(5 * DAY));
    let (id, _) = ctx.endpoint(&d).await;
    assert_eq!(send_one(&d, &id).await.dead, 1);
    clock.advance(4 * DAY);
    assert_eq!(send_one(&d, &id).await.dead, 1);
    assert_eq!(
        d.endpoint(&id).await.unwrap().status,
        EndpointStatus::Active,
        "4 days"
    );

    clock.advance(DAY + Duration::from_secs(1));
    assert_eq!(send_one(&d, &id).await.dead, 1);
    let endpoint = d.endpoint(&id).await.unwrap();
    assert_eq!(endpoint.status, EndpointStatus::Disabled);
    assert_eq!(endpoint.disabled_reason, Some(DisabledReason::Failing));
    let at = endpoint.disabled_at.expect("disabled_at");
    assert!(
        at >= clock_now(&clock),
        "disabled when the attempt was recorded: {at}"
    );
    let events = recorder.take();
    assert_eq!(events.iter().filter(|e| e.starts_with("dead ")).count(), 3);
    assert!(events.contains(&format!("disabled {id} failing")), "{events:?}");

    // Disabled: new messages are refused, and nothing is attempted any more.
    assert_eq!(
        d.dispatch(NewMessage::new(&id, "a", 1)).await.unwrap_err().code(),
        "endpoint_disabled"
    );
    assert_eq!(deliver(&d).await.attempted, 0);

    // The state is in the database: a fresh dispatcher (another process) sees the same clock. Enabled
    // again, an endpoint that goes on failing is disabled again at once (its clock was not reset).
    d.enable_endpoint(&id).await.unwrap();
    let (fresh, fresh_clock, _) = failing_setup(&ctx, Some(5 * DAY));
    fresh_clock.advance(10 * DAY + Duration::from_secs(1));
    assert_eq!(send_one(&fresh, &id).await.dead, 1);
    let endpoint = fresh.endpoint(&id).await.unwrap();
    assert_eq!(endpoint.disabled_reason, Some(DisabledReason::Failing));
}

fn clock_now(clock: &ManualClock) -> chrono::DateTime<chrono::Utc> {
    use webhooks_dispatch::Clock;
    clock.now()
}

async fn a_delivery_resets_the_failure_clock_and_none_turns_auto_disable_off(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let (d, clock, _) = failing_setup(&ctx, Some(5 * DAY));
    let (id, _) = ctx.endpoint(&d).await;
    assert_eq!(send_one(&d, &id).await.dead, 1);
    clock.advance(3 * DAY);
    ctx.receiver.push_replies([Reply::status(200)]);
    assert_eq!(send_one(&d, &id).await.delivered, 1, "the clock stops");
    clock.advance(3 * DAY);
    assert_eq!(send_one(&d, &id).await.dead, 1, "and starts again here");
    clock.advance(4 * DAY);
    assert_eq!(send_one(&d, &id).await.dead, 1);
    assert_eq!(
        d.endpoint(&id).await.unwrap().status,
        EndpointStatus::Active,
        "4 days since"
    );
    clock.advance(DAY + Duration::from_secs(1));
    assert_eq!(send_one(&d, &id).await.dead, 1);
    assert_eq!(
        d.endpoint(&id).await.unwrap().disabled_reason,
        Some(DisabledReason::Failing)
    );

    // With the rule off, no amount of failure disables.
    let (off, clock, _) = failing_setup(&ctx, None);
    let (id, _) = ctx.endpoint(&off).await;
    for _ in 0..3 {
        assert_eq!(send_one(&off, &id).await.dead, 1);
        clock.advance(10 * DAY);
    }
    assert_eq!(off.endpoint(&id).await.unwrap().status, EndpointStatus::Active);
}

async fn lifecycle_changes_are_reported_to_the_observer_once_each(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let recorder = Arc::new(Recorder::default());
    let d = ctx.builder().observer(recorder.clone()).build();
    let (id, _) = ctx.endpoint(&d).await;
    d.disable_endpoint(&id).await.unwrap();
    d.disable_endpoint(&id).await.unwrap();
    d.enable_endpoint(&id).await.unwrap();
    d.enable_endpoint(&id).await.unwrap();
    let update = UpdateEndpoint {
        description: Some("x".into()),
        ..UpdateEndpoint::default()
    };
    d.update_endpoint(&id, update).await.unwrap();
    d.delete_endpoint(&id).await.unwrap();
    assert!(d.delete_endpoint(&id).await.is_err());
    assert_eq!(
        recorder.take(),
        [
            format!("created {id}"),
            format!("disabled {id} manual"),
            format!("enabled {id}"),
            format!("updated {id}"),
            format!("deleted {id}"),
        ],
        "repeated disables and enables change nothing and report nothing"
    );
}

/// A statement whose parameter is sometimes NULL must not depend on which came first on a connection: sqlx
/// caches a statement with the parameter types of its first call, so a NULL (sent as text) followed by an
/// array once failed there. Enough calls of each kind that every pooled connection sees both, in the order
/// that broke.
async fn updates_with_and_without_each_field_work_on_every_pooled_connection(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let (id, _) = ctx.endpoint(&d).await;
    for _ in 0..12 {
        let update = UpdateEndpoint {
            description: Some("only this".into()),
            ..UpdateEndpoint::default()
        };
        d.update_endpoint(&id, update)
            .await
            .expect("update without event types");
    }
    for i in 0..12 {
        let update = UpdateEndpoint {
            event_types: Some(vec![format!("t{i}")]),
            metadata: Some(BTreeMap::from([("i".to_owned(), i.to_string())])),
            ..UpdateEndpoint::default()
        };
        let updated = d
            .update_endpoint(&id, update)
            .await
            .expect("update with event types");
        assert_eq!(updated.event_types, [format!("t{i}")]);
    }
    // The same for completion's failing cutoff: a dispatcher with the rule off, then one with it on.
    let (off, _, _) = failing_setup(&ctx, None);
    let (on, _, _) = failing_setup(&ctx, Some(5 * DAY));
    let (target, _) = ctx.endpoint(&off).await;
    for d in [&off, &off, &off, &on, &on, &on] {
        for _ in 0..4 {
            d.dispatch(NewMessage::new(&target, "a", 1)).await.unwrap();
        }
        assert_eq!(deliver(d).await.dead, 4);
    }
}
