use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use webhooks_dispatch::store::Executor;
use webhooks_dispatch::{
    DeliverDue, Dispatcher, ListMessages, MessagePage, MessageState, NewEndpoint, NewEvent, NewMessage,
    RetryPolicy,
};
use webhooks_dispatch_testkit::receiver::Reply;

use crate::conformance;
use crate::support::{t0, CountingExecutor, Ctx, Engine, Exec, ManualClock};

conformance!(
    messages_are_listed_newest_first_and_by_endpoint_even_once_it_is_disabled_or_deleted,
    an_events_messages_are_listed_by_event_alone_or_with_one_endpoint,
    messages_are_filtered_by_state_after_real_deliveries,
    since_is_inclusive_and_until_exclusive_on_dispatch_time,
    pages_never_repeat_or_skip_a_message_while_others_are_dispatched,
    bad_limits_filters_and_windows_are_invalid_input_before_any_sql,
);

type D = Dispatcher<Exec>;

async fn send(d: &D, endpoint: &str, n: i64) -> String {
    d.dispatch(NewMessage::new(endpoint, "invoice.paid", n))
        .await
        .expect("dispatch")
        .message_id
}

async fn list<E: Executor>(d: &Dispatcher<E>, filter: ListMessages) -> MessagePage {
    d.list_messages(filter).await.expect("list_messages")
}

fn ids(page: &MessagePage) -> Vec<String> {
    page.data.iter().map(|m| m.id.clone()).collect()
}

fn newest_first(mut sent: Vec<String>) -> Vec<String> {
    sent.reverse();
    sent
}

async fn messages_are_listed_newest_first_and_by_endpoint_even_once_it_is_disabled_or_deleted(
    engine: Engine,
) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let (a, _) = ctx.endpoint(&d).await;
    let (b, _) = ctx.endpoint(&d).await;
    let (mut all, mut to_a) = (Vec::new(), Vec::new());
    for i in 0..5 {
        let id = send(&d, &a, i).await;
        to_a.push(id.clone());
        all.push(id);
        all.push(send(&d, &b, i).await);
    }

    let everything = list(&d, ListMessages::default()).await;
    assert_eq!(
        ids(&everything),
        newest_first(all.clone()),
        "dispatch order, reversed"
    );
    assert_eq!(everything.next_cursor, None);
    let first = &everything.data[0];
    assert_eq!(
        (first.endpoint_id.as_str(), first.event_type.as_str(), first.state),
        (b.as_str(), "invoice.paid", MessageState::Pending)
    );
    assert_eq!(first.event_id, None, "a direct message belongs to no event");
    assert_eq!(
        first,
        &d.message(&first.id).await.unwrap(),
        "as message() reads it"
    );

    let only_a = ListMessages {
        endpoint_id: Some(a.clone()),
        ..ListMessages::default()
    };
    assert_eq!(ids(&list(&d, only_a.clone()).await), newest_first(to_a.clone()));
    // History outlives the endpoint's state.
    d.disable_endpoint(&a).await.unwrap();
    assert_eq!(ids(&list(&d, only_a.clone()).await), newest_first(to_a.clone()));
    d.delete_endpoint(&a).await.unwrap();
    let after_delete = list(&d, only_a).await;
    assert_eq!(ids(&after_delete), newest_first(to_a), "a deleted endpoint's too");
    assert!(after_delete.data.iter().all(|m| m.state == MessageState::Dead));
    let nobody = ListMessages {
        endpoint_id: Some("ep_nope".to_owned()),
        ..ListMessages::default()
    };
    assert_eq!(
        list(&d, nobody).await,
        MessagePage {
            data: vec![],
            next_cursor: None
        }
    );
}

async fn an_events_messages_are_listed_by_event_alone_or_with_one_endpoint(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let mut endpoints = Vec::new();
    for _ in 0..3 {
        let ep = d
            .register_endpoint(NewEndpoint::new("acme", ctx.url()))
            .await
            .unwrap();
        endpoints.push(ep.id);
    }
    let before = send(&d, &endpoints[0], 0).await;
    let event = d
        .dispatch_event(NewEvent::new("acme", "invoice.paid", 1))
        .await
        .unwrap();
    let other = d
        .dispatch_event(NewEvent::new("acme", "invoice.paid", 2))
        .await
        .unwrap();
    let after = send(&d, &endpoints[0], 3).await;
    let fanned: Vec<String> = event.messages.iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(fanned.len(), 3);

    let by_event = ListMessages {
        event_id: Some(event.event_id.clone()),
        ..ListMessages::default()
    };
    let page = list(&d, by_event.clone()).await;
    let mut expected = fanned.clone();
    expected.sort();
    assert_eq!(
        ids(&page),
        newest_first(expected),
        "the event's messages only, newest first"
    );
    assert!(page
        .data
        .iter()
        .all(|m| m.event_id.as_deref() == Some(event.event_id.as_str())));
    assert_eq!(
        d.message(&fanned[0]).await.unwrap().event_id,
        Some(event.event_id.clone()),
        "message() says which event a message fans out"
    );

    let one = ListMessages {
        endpoint_id: Some(endpoints[1].clone()),
        ..by_event.clone()
    };
    let page = list(&d, one).await;
    assert_eq!(page.data.len(), 1);
    assert_eq!(page.data[0].endpoint_id, endpoints[1]);
    assert_eq!(page.data[0].event_id.as_deref(), Some(event.event_id.as_str()));

    // Events are ordered with direct messages by dispatch time, on the endpoint's listing too.
    let first_endpoint = ListMessages {
        endpoint_id: Some(endpoints[0].clone()),
        ..ListMessages::default()
    };
    let of_first = |e: &webhooks_dispatch::DispatchedEvent| {
        e.messages
            .iter()
            .find(|m| m.endpoint_id == endpoints[0])
            .unwrap()
            .message_id
            .clone()
    };
    assert_eq!(
        ids(&list(&d, first_endpoint).await),
        [after, of_first(&other), of_first(&event), before]
    );
    let unknown = ListMessages {
        event_id: Some("evt_nope".to_owned()),
        ..ListMessages::default()
    };
    assert!(list(&d, unknown).await.data.is_empty());
}

async fn messages_are_filtered_by_state_after_real_deliveries(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let (ep, _) = ctx.endpoint(&d).await;
    let mut sent = Vec::new();
    for i in 0..4 {
        sent.push(send(&d, &ep, i).await);
    }
    // Oldest first: the first is refused for good (400), the second delivered; two stay pending.
    ctx.receiver.push_replies([Reply::status(400)]);
    let one = DeliverDue {
        batch: Some(1),
        ..DeliverDue::default()
    };
    assert_eq!(d.deliver_due(one).await.unwrap().dead, 1);
    assert_eq!(d.deliver_due(one).await.unwrap().delivered, 1);

    let state = |status: MessageState| ListMessages {
        endpoint_id: Some(ep.clone()),
        status: Some(status),
        ..ListMessages::default()
    };
    let dead = list(&d, state(MessageState::Dead)).await;
    assert_eq!(ids(&dead), [sent[0].clone()]);
    assert_eq!(dead.data[0].attempts, 1);
    assert_eq!(
        ids(&list(&d, state(MessageState::Delivered)).await),
        [sent[1].clone()]
    );
    assert_eq!(
        ids(&list(&d, state(MessageState::Pending)).await),
        [sent[3].clone(), sent[2].clone()]
    );
    // The same without the endpoint: the primary-key statement applies the state too.
    let anywhere = ListMessages {
        status: Some(MessageState::Delivered),
        ..ListMessages::default()
    };
    assert_eq!(ids(&list(&d, anywhere).await), [sent[1].clone()]);
}

async fn since_is_inclusive_and_until_exclusive_on_dispatch_time(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let clock = ManualClock::at(t0());
    let d = ctx.dispatcher_at(clock.clone(), RetryPolicy::default());
    let (ep, _) = ctx.endpoint(&d).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(send(&d, &ep, i).await);
        clock.advance(Duration::from_secs(1));
    }
    let second = |s: i64| t0() + chrono::Duration::seconds(s);
    let window = |since: Option<i64>, until: Option<i64>| ListMessages {
        since: since.map(second),
        until: until.map(second),
        ..ListMessages::default()
    };
    let (m0, m1, m2) = (sent[0].clone(), sent[1].clone(), sent[2].clone());
    assert_eq!(
        ids(&list(&d, window(Some(1), None)).await),
        [m2.clone(), m1.clone()]
    );
    assert_eq!(ids(&list(&d, window(None, Some(1))).await), [m0.as_str()]);
    assert_eq!(ids(&list(&d, window(Some(1), Some(2))).await), [m1.as_str()]);
    assert_eq!(
        ids(&list(&d, window(Some(0), Some(3))).await),
        [m2.clone(), m1.clone(), m0]
    );
    assert!(list(&d, window(Some(3), None)).await.data.is_empty());
    let for_endpoint = ListMessages {
        endpoint_id: Some(ep.clone()),
        ..window(Some(2), None)
    };
    assert_eq!(ids(&list(&d, for_endpoint).await), [m2]);
    // Each pooled connection runs the statement with and without each bound, in every order (three kinds
    // of call rotating over at most eight connections): a driver caching the first call's parameter types
    // must not misread a later one.
    for round in 0..12 {
        let (filter, expected) = match round % 3 {
            0 => (window(None, None), 3),
            1 => (window(Some(1), None), 2),
            _ => (window(None, Some(1)), 1),
        };
        assert_eq!(list(&d, filter).await.data.len(), expected, "round {round}");
    }
    for (since, until) in [(1, 1), (2, 1)] {
        let err = d
            .list_messages(window(Some(since), Some(until)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_input", "{since}..{until}");
    }
}

async fn pages_never_repeat_or_skip_a_message_while_others_are_dispatched(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let (ep, _) = ctx.endpoint(&d).await;
    let (other, _) = ctx.endpoint(&d).await;
    for i in 0..10 {
        send(&d, &ep, i).await;
        send(&d, &other, i).await;
    }
    // One task keeps dispatching while the pages are read, and one more message goes in between each two.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (d, ep, stop) = (d.clone(), ep.clone(), stop.clone());
        tokio::spawn(async move {
            for n in 100..150 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                send(&d, &ep, n).await;
                tokio::task::yield_now().await;
            }
        })
    };
    for filter in [
        ListMessages::default(),
        ListMessages {
            endpoint_id: Some(ep.clone()),
            ..ListMessages::default()
        },
    ] {
        let committed = ids(&list(
            &d,
            ListMessages {
                limit: Some(250),
                ..filter.clone()
            },
        )
        .await);
        let mut seen: Vec<String> = Vec::new();
        let mut cursor = None;
        loop {
            let page = list(
                &d,
                ListMessages {
                    limit: Some(3),
                    cursor,
                    ..filter.clone()
                },
            )
            .await;
            assert!(!page.data.is_empty() && page.data.len() <= 3, "{page:?}");
            seen.extend(ids(&page));
            send(&d, &ep, -1).await;
            match page.next_cursor {
                Some(next) => {
                    assert_eq!(Some(&next), seen.last(), "the cursor is the page's last id");
                    cursor = Some(next);
                }
                None => break,
            }
        }
        // Strictly descending is no repeat; every message committed before the first page is there, so
        // none was skipped; what came later than the first page waits for a fresh first page.
        assert!(seen.windows(2).all(|w| w[0] > w[1]), "{filter:?}: {seen:?}");
        let missing: Vec<&String> = committed.iter().filter(|id| !seen.contains(id)).collect();
        assert!(missing.is_empty(), "{filter:?}: skipped {missing:?}");
        if filter.endpoint_id.is_some() {
            for id in &seen {
                assert_eq!(d.message(id).await.unwrap().endpoint_id, ep, "{id}");
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
}

async fn bad_limits_filters_and_windows_are_invalid_input_before_any_sql(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let exec = CountingExecutor::new(ctx.exec.clone());
    let d = ctx.dispatcher().using(exec.clone());
    let long = "x".repeat(513);
    let bad = [
        ListMessages {
            limit: Some(0),
            ..ListMessages::default()
        },
        ListMessages {
            limit: Some(251),
            ..ListMessages::default()
        },
        ListMessages {
            endpoint_id: Some(" ".to_owned()),
            ..ListMessages::default()
        },
        ListMessages {
            event_id: Some(long.clone()),
            ..ListMessages::default()
        },
        ListMessages {
            cursor: Some(String::new()),
            ..ListMessages::default()
        },
        ListMessages {
            cursor: Some(long),
            ..ListMessages::default()
        },
        ListMessages {
            since: Some(t0()),
            until: Some(t0()),
            ..ListMessages::default()
        },
    ];
    for filter in bad {
        let err = d.list_messages(filter.clone()).await.unwrap_err();
        assert_eq!(err.code(), "invalid_input", "{filter:?}");
    }
    assert_eq!(exec.count(), 0, "refused before any SQL");

    // The bounds themselves are accepted, and the default page is 50.
    let (ep, _) = ctx.endpoint(&d).await;
    let batch: Vec<_> = (0..60).map(|i| NewMessage::new(&ep, "a", i)).collect();
    d.dispatch_many(batch).await.unwrap();
    for (limit, len) in [(Some(1), 1), (Some(250), 60), (None, 50)] {
        let page = list(
            &d,
            ListMessages {
                limit,
                ..ListMessages::default()
            },
        )
        .await;
        assert_eq!(page.data.len(), len, "{limit:?}");
        assert_eq!(page.next_cursor.is_some(), len < 60, "{limit:?}");
    }
}
