use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use webhooks_dispatch::{DeliverDue, Dispatcher, MessageState, NewEndpoint, NewMessage, Outcome};
use webhooks_dispatch_testkit::receiver::{Receiver, ReceiverOptions, Reply};

use crate::conformance;
use crate::support::{Ctx, Engine};

conformance!(
    invariant6_refuses_non_global_destinations_at_registration,
    invariant6_connection_is_pinned_to_the_vetted_address_with_sni_for_the_name,
    invariant6_rebinding_to_a_refused_address_is_refused_at_delivery_without_connecting,
    invariant6_only_the_explicit_allowlist_opens_private_addresses,
    hostile_endpoint_trickling_headers_is_cut_off_by_the_absolute_deadline,
    hostile_endpoint_endless_body_is_read_only_as_a_bounded_prefix,
    response_body_read_stops_at_the_default_4_kib,
);

async fn invariant6_refuses_non_global_destinations_at_registration(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    // The production configuration: no allowlist.
    let d = Dispatcher::builder(ctx.exec.clone())
        .resolver(Arc::new(ctx.resolver.clone()))
        .build();
    ctx.resolver
        .insert("internal.test", vec!["10.1.2.3".parse().unwrap()]);
    ctx.resolver.insert(
        "mixed.test",
        vec!["8.8.8.8".parse().unwrap(), "192.168.1.1".parse().unwrap()],
    );
    let refused = [
        "https://127.0.0.1/hook",
        "https://10.0.0.1/hook",
        "https://172.16.0.1/hook",
        "https://192.168.0.1/hook",
        "https://100.64.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://0.0.0.0/hook",
        "https://255.255.255.255/hook",
        "https://224.0.0.1/hook",
        "https://240.0.0.1/hook",
        "https://192.0.2.1/hook",
        "https://198.18.0.1/hook",
        "https://[::1]/hook",
        "https://[fd00::1]/hook",
        "https://[fe80::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[64:ff9b::a00:1]/hook",
        "https://[2002:a00:1::]/hook",
        "https://[2001:db8::1]/hook",
        "https://receiver.test/hook", // resolves to loopback, which this dispatcher does not allow
        "https://internal.test/hook",
        "https://mixed.test/hook",
        "https://unknown-name.test/hook", // lookup fails
        "http://8.8.8.8/hook",
        "https://user:pass@8.8.8.8/hook",
    ];
    for url in refused {
        let err = d.register_endpoint(NewEndpoint::new("o", url)).await.unwrap_err();
        assert_eq!(err.code(), "invalid_url", "{url}");
    }
    // Public destinations, IPv6 literals included, are accepted (registration sends no packet).
    ctx.resolver
        .insert("public.test", vec!["93.184.216.34".parse().unwrap()]);
    for url in [
        "https://[2606:4700:4700::1111]/hook",
        "https://8.8.8.8:8443/hook",
        "https://public.test/hook",
    ] {
        d.register_endpoint(NewEndpoint::new("o", url))
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}

async fn invariant6_connection_is_pinned_to_the_vetted_address_with_sni_for_the_name(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let (ep, _) = ctx.endpoint(&d).await;
    d.dispatch(NewMessage::new(&ep, "a", 1)).await.unwrap();
    let lookups = ctx.resolver.lookups();
    assert_eq!(d.deliver_due(DeliverDue::default()).await.unwrap().delivered, 1);
    assert_eq!(
        ctx.resolver.lookups(),
        lookups + 1,
        "delivery re-resolves the name exactly once"
    );
    let got = &ctx.receiver.received()[0];
    // The connection went to 127.0.0.1 (the only address the name maps to), yet TLS was for the name.
    assert_eq!(got.sni.as_deref(), Some("receiver.test"));
    assert_eq!(
        got.headers["host"],
        format!("receiver.test:{}", ctx.receiver.port()).as_str()
    );
    assert_eq!(got.path, "/hook");
}

async fn invariant6_rebinding_to_a_refused_address_is_refused_at_delivery_without_connecting(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    // A trap listening on 127.0.0.2, which is NOT in the allowlist (only 127.0.0.1/32 is).
    let trap = Receiver::start(
        &ctx.ca,
        ReceiverOptions {
            bind: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
            ..ReceiverOptions::default()
        },
    )
    .await
    .unwrap();
    let d = ctx.dispatcher();
    ctx.resolver
        .insert("rebind.test", vec!["93.184.216.34".parse().unwrap()]);
    let ep = d
        .register_endpoint(NewEndpoint::new(
            "o",
            format!("https://rebind.test:{}/hook", trap.port()),
        ))
        .await
        .expect("public at registration");
    let id = d
        .dispatch(NewMessage::new(&ep.id, "a", 1))
        .await
        .unwrap()
        .message_id;
    // The attacker re-points the name at an internal address before delivery.
    ctx.resolver
        .insert("rebind.test", vec!["127.0.0.2".parse().unwrap()]);
    let r = d.deliver_due(DeliverDue::default()).await.unwrap();
    assert_eq!(
        (r.attempted, r.dead),
        (1, 1),
        "refusals are permanent, not retried"
    );
    assert_eq!(
        trap.connections_accepted(),
        0,
        "a connection was opened to a refused address"
    );
    let attempts = d.list_attempts(&id).await.unwrap();
    assert_eq!(
        attempts.len(),
        1,
        "a refused destination is still recorded as an attempt"
    );
    assert_eq!(
        (attempts[0].status_code, attempts[0].outcome),
        (None, Outcome::Dead)
    );
    assert_eq!(
        attempts[0].error.as_deref(),
        Some("destination refused: address refused: loopback")
    );
    assert_eq!(d.message(&id).await.unwrap().state, MessageState::Dead);
}

async fn invariant6_only_the_explicit_allowlist_opens_private_addresses(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let allowed = ctx.dispatcher();
    let (ep, _) = ctx.endpoint(&allowed).await;
    let id = allowed
        .dispatch(NewMessage::new(&ep, "a", 1))
        .await
        .unwrap()
        .message_id;
    // The same stored endpoint, drained by a dispatcher without the allowlist: refused at delivery.
    let strict = Dispatcher::builder(ctx.exec.clone())
        .resolver(Arc::new(ctx.resolver.clone()))
        .root_certificates(ctx.ca.root_store())
        .build();
    let r = strict.deliver_due(DeliverDue::default()).await.unwrap();
    assert_eq!(r.dead, 1);
    assert_eq!(ctx.receiver.connections_accepted(), 0);
    let a = &strict.list_attempts(&id).await.unwrap()[0];
    assert!(a.error.as_deref().unwrap().starts_with("destination refused"));
}

async fn hostile_endpoint_trickling_headers_is_cut_off_by_the_absolute_deadline(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    // HTTP/1.1: only there does the receiver trickle a byte at a time (on HTTP/2 its Trickle is a Hang).
    let d = ctx
        .builder()
        .http2(false)
        .attempt_timeout(Duration::from_millis(800))
        .build();
    let (ep, _) = ctx.endpoint(&d).await;
    ctx.receiver.set_default_reply(Reply::Trickle {
        every: Duration::from_millis(50),
    });
    let id = d.dispatch(NewMessage::new(&ep, "a", 1)).await.unwrap().message_id;
    // A per-read timeout would never fire (a byte arrives every 50 ms), so the drain would not return: the
    // outer bound turns that into a failure. Not a speed test: it is 12 times the deadline.
    let r = tokio::time::timeout(Duration::from_secs(10), d.deliver_due(DeliverDue::default()))
        .await
        .expect("a trickling endpoint held the attempt past its absolute deadline")
        .unwrap();
    assert_eq!(r.retried, 1);
    assert_eq!(
        ctx.receiver.received()[0].http_version,
        http::Version::HTTP_11,
        "the trickle must run over HTTP/1.1 to test anything"
    );
    let a = &d.list_attempts(&id).await.unwrap()[0];
    assert_eq!(a.error.as_deref(), Some("attempt timed out"));
    assert_eq!(a.status_code, None);

    // Another endpoint: the first one now waits for its retry time, new messages included.
    let (other, _) = ctx.endpoint(&d).await;
    ctx.receiver.set_default_reply(Reply::Hang);
    let id = d
        .dispatch(NewMessage::new(&other, "a", 2))
        .await
        .unwrap()
        .message_id;
    let r = tokio::time::timeout(Duration::from_secs(10), d.deliver_due(DeliverDue::default()))
        .await
        .expect("a hanging endpoint held the attempt past its deadline")
        .unwrap();
    assert_eq!(r.retried, 1);
    assert_eq!(
        d.list_attempts(&id).await.unwrap()[0].error.as_deref(),
        Some("attempt timed out")
    );
}

async fn hostile_endpoint_endless_body_is_read_only_as_a_bounded_prefix(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.builder().attempt_timeout(Duration::from_secs(10)).build();
    let (ep, _) = ctx.endpoint(&d).await;
    ctx.receiver.set_default_reply(Reply::EndlessBody);
    let id = d.dispatch(NewMessage::new(&ep, "a", 1)).await.unwrap().message_id;
    let started = Instant::now();
    let r = d.deliver_due(DeliverDue::default()).await.unwrap();
    // The status line decided the outcome; the endless body was not read to the deadline (reading it whole
    // would hold the attempt for the full 10 s).
    assert_eq!(r.delivered, 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(d.list_attempts(&id).await.unwrap()[0].status_code, Some(200));
}

/// The default read limit is exactly 4 KiB: a response body of that size is read to its end, so the HTTP/1.1
/// connection is between messages and reused; a larger one is abandoned unread and its connection closed.
/// (A limit of a few MiB would read the larger body whole and reuse the connection.)
async fn response_body_read_stops_at_the_default_4_kib(engine: Engine) {
    assert_eq!(webhooks_dispatch::DEFAULT_MAX_RESPONSE_BODY, 4 * 1024);
    let ctx = Ctx::new(engine).await;
    let d = ctx.builder().http2(false).build();
    let (ep, _) = ctx.endpoint(&d).await;
    let body = |len: usize| Reply::Status {
        status: 200,
        headers: vec![],
        body: vec![b'x'; len],
    };
    ctx.receiver.push_replies([
        body(webhooks_dispatch::DEFAULT_MAX_RESPONSE_BODY),
        body(256 * 1024),
        Reply::default(),
    ]);
    let mut connections = Vec::new();
    for i in 0..3 {
        d.dispatch(NewMessage::new(&ep, "a", i)).await.unwrap();
        let r = d.deliver_due(DeliverDue::default()).await.unwrap();
        assert_eq!(r.delivered, 1);
        connections.push(ctx.receiver.connections_accepted());
    }
    assert_eq!(
        connections,
        [1, 1, 2],
        "a 4 KiB body keeps the connection, a 256 KiB one closes it"
    );
    assert!(ctx
        .receiver
        .received()
        .iter()
        .all(|r| r.http_version == http::Version::HTTP_11));
}
