//! Connection reuse, HTTP/2 and the vetted DNS cache, and invariant 6 when connections are pooled.
//!
//! Receivers are started per scenario (several on 127.0.0.x, some sharing a port so that DNS can move a name
//! between them), so connection counts belong to one scenario only.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use webhooks_dispatch::{DeliverDue, Dispatcher, MessageState, NewEndpoint, NewMessage, Outcome};
use webhooks_dispatch_testkit::receiver::{Receiver, ReceiverOptions, Reply};

use crate::conformance;
use crate::support::{Ctx, Engine, Exec, RECEIVER_HOST};

conformance!(
    connection_reuse_keeps_one_connection_for_many_deliveries,
    http2_is_negotiated_and_used,
    invariant6_rebinding_after_a_pooled_connection_is_refused_without_connecting,
    invariant6_no_connection_to_refused_address_even_when_pooled,
    dns_change_to_another_allowed_address_opens_a_new_connection_there,
    dns_cache_keeps_only_vetted_answers,
    idle_connections_expire_and_reuse_can_be_disabled,
    hostile_endpoint_connection_is_not_reused_after_trickle_hang_or_endless_body,
);

/// What one drain did: (attempted, delivered, retried, dead).
type Report = (u64, u64, u64, u64);
const DELIVERED: Report = (1, 1, 0, 0);
const DEAD: Report = (1, 0, 0, 1);

/// One attempt per message, for tests that send to an endpoint again right after it could not be reached: a
/// retried failure would make the endpoint wait for that retry time (endpoint backoff), new messages too.
fn one_attempt() -> webhooks_dispatch::RetryPolicy {
    webhooks_dispatch::RetryPolicy {
        max_attempts: 1,
        ..webhooks_dispatch::RetryPolicy::default()
    }
}

/// The usual test context plus helpers for pooling scenarios.
struct Env {
    ctx: Ctx,
}

impl Env {
    async fn new(engine: Engine) -> Env {
        Env {
            ctx: Ctx::new(engine).await,
        }
    }

    /// Enqueues one message and drains; returns the message id and what the drain did.
    async fn send(&self, d: &Dispatcher<Exec>, ep: &str, n: i64) -> (String, Report) {
        let id = d.dispatch(NewMessage::new(ep, "a", n)).await.unwrap().message_id;
        let r = d.deliver_due(DeliverDue::default()).await.unwrap();
        (id, (r.attempted, r.delivered, r.retried, r.dead))
    }

    /// A receiver on `ip` (any free port) whose certificate also names `host`.
    async fn receiver_on(&self, ip: [u8; 4], host: &str) -> Receiver {
        let [receiver] = self.on_same_port([ip], host).await;
        receiver
    }

    /// Receivers on each of `ips`, all on one port (so one URL reaches whichever DNS names), whose
    /// certificates also name `host`. The testkit picks a port that is free on every address.
    async fn on_same_port<const N: usize>(&self, ips: [[u8; 4]; N], host: &str) -> [Receiver; N] {
        let mut names = ReceiverOptions::default().names;
        names.push(host.to_owned());
        let binds = ips.map(|ip| IpAddr::V4(Ipv4Addr::from(ip)));
        let receivers = Receiver::start_on_same_port(&self.ctx.ca, &binds, names)
            .await
            .expect("receivers");
        receivers
            .try_into()
            .unwrap_or_else(|_| panic!("one receiver per address"))
    }
}

/// Registers `https://{host}:{port}/hook` and returns the endpoint id.
async fn endpoint_at(d: &Dispatcher<Exec>, host: &str, port: u16) -> String {
    d.register_endpoint(NewEndpoint::new("o", format!("https://{host}:{port}/hook")))
        .await
        .expect("register")
        .id
}

/// Dispatches 20 messages and drains them 5 at a time.
async fn deliver_twenty(d: &Dispatcher<Exec>, ep: &str) {
    for i in 0..20 {
        d.dispatch(NewMessage::new(ep, "a", i)).await.unwrap();
    }
    let mut delivered = 0;
    for _ in 0..4 {
        let r = d
            .deliver_due(DeliverDue {
                batch: Some(5),
                ..DeliverDue::default()
            })
            .await
            .unwrap();
        delivered += r.delivered;
    }
    assert_eq!(delivered, 20);
}

async fn connection_reuse_keeps_one_connection_for_many_deliveries(engine: Engine) {
    let env = Env::new(engine).await;
    let ctx = &env.ctx;
    // HTTP/2: every attempt, concurrent ones included, shares one connection.
    let d = ctx.dispatcher();
    let (ep, _) = ctx.endpoint(&d).await;
    deliver_twenty(&d, &ep).await;
    assert_eq!(ctx.receiver.count(), 20);
    assert_eq!(ctx.receiver.connections_accepted(), 1);

    // HTTP/1.1: one connection per concurrent attempt at most, reused across drains.
    let h1 = env.receiver_on([127, 0, 0, 1], RECEIVER_HOST).await;
    let d = ctx.builder().http2(false).concurrency(4).build();
    let ep = endpoint_at(&d, RECEIVER_HOST, h1.port()).await;
    deliver_twenty(&d, &ep).await;
    assert_eq!(h1.count(), 20);
    let conns = h1.connections_accepted();
    assert!((1..=4).contains(&conns), "{conns} connections for 20 deliveries");
    assert!(h1
        .received()
        .iter()
        .all(|r| r.http_version == http::Version::HTTP_11));
}

async fn http2_is_negotiated_and_used(engine: Engine) {
    let env = Env::new(engine).await;
    let ctx = &env.ctx;
    let d = ctx.dispatcher();
    let (ep, _) = ctx.endpoint(&d).await;
    assert_eq!(env.send(&d, &ep, 1).await.1, DELIVERED);
    let got = &ctx.receiver.received()[0];
    assert_eq!(got.http_version, http::Version::HTTP_2);
    // The name still drives SNI and the Host header / :authority.
    assert_eq!(got.sni.as_deref(), Some(RECEIVER_HOST));
    assert_eq!(
        got.headers["host"],
        format!("{RECEIVER_HOST}:{}", ctx.receiver.port()).as_str()
    );
    assert_eq!(got.path, "/hook");

    let d = ctx.builder().http2(false).build();
    assert_eq!(env.send(&d, &ep, 2).await.1, DELIVERED);
    let got = &ctx.receiver.received()[1];
    assert_eq!(got.http_version, http::Version::HTTP_11);
    assert_eq!(got.path, "/hook");
}

async fn invariant6_rebinding_after_a_pooled_connection_is_refused_without_connecting(engine: Engine) {
    let env = Env::new(engine).await;
    let ctx = &env.ctx;
    for http2 in [true, false] {
        let host = format!("rebind-pooled-{http2}.test");
        // A trap on 127.0.0.2 (not allowlisted), on the very port the URL names.
        let [good, trap] = env.on_same_port([[127, 0, 0, 1], [127, 0, 0, 2]], &host).await;
        ctx.resolver.insert(&host, vec![[127, 0, 0, 1].into()]);
        // No DNS cache: every attempt sees the current answer.
        let d = ctx.builder().http2(http2).dns_cache_ttl(Duration::ZERO).build();
        let ep = endpoint_at(&d, &host, good.port()).await;
        assert_eq!(env.send(&d, &ep, 1).await.1, DELIVERED);
        assert_eq!(good.connections_accepted(), 1, "a connection is now pooled");

        ctx.resolver.insert(&host, vec![[127, 0, 0, 2].into()]);
        let (id, report) = env.send(&d, &ep, 2).await;
        assert_eq!(report, DEAD, "http2={http2}");
        assert_eq!(trap.connections_accepted(), 0, "connected to a refused address");
        assert_eq!(good.connections_accepted(), 1, "opened a new connection");
        assert_eq!(
            good.count(),
            1,
            "the pooled connection carried a refused delivery"
        );
        let attempts = d.list_attempts(&id).await.unwrap();
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
}

async fn invariant6_no_connection_to_refused_address_even_when_pooled(engine: Engine) {
    let env = Env::new(engine).await;
    let ctx = &env.ctx;
    for http2 in [true, false] {
        let host = format!("mixed-pooled-{http2}.test");
        let [good, trap] = env.on_same_port([[127, 0, 0, 1], [127, 0, 0, 2]], &host).await;
        ctx.resolver.insert(&host, vec![[127, 0, 0, 1].into()]);
        let d = ctx.builder().http2(http2).dns_cache_ttl(Duration::ZERO).build();
        let ep = endpoint_at(&d, &host, good.port()).await;
        assert_eq!(env.send(&d, &ep, 1).await.1, DELIVERED);

        // The answer still contains the pooled address, but also a refused one: the whole answer is refused,
        // so the perfectly good pooled connection must not be used either.
        ctx.resolver
            .insert(&host, vec![[127, 0, 0, 1].into(), [127, 0, 0, 2].into()]);
        let (id, report) = env.send(&d, &ep, 2).await;
        assert_eq!(report, DEAD, "http2={http2}");
        assert_eq!(
            good.count(),
            1,
            "a refused answer was delivered over a pooled connection"
        );
        assert_eq!((good.connections_accepted(), trap.connections_accepted()), (1, 0));
        assert_eq!(
            d.list_attempts(&id).await.unwrap()[0].error.as_deref(),
            Some("destination refused: address refused: loopback")
        );
    }
}

async fn dns_change_to_another_allowed_address_opens_a_new_connection_there(engine: Engine) {
    let env = Env::new(engine).await;
    let ctx = &env.ctx;
    for http2 in [true, false] {
        let host = format!("moving-{http2}.test");
        let [a, b] = env.on_same_port([[127, 0, 0, 1], [127, 0, 0, 3]], &host).await;
        ctx.resolver.insert(&host, vec![[127, 0, 0, 1].into()]);
        let d = ctx
            .builder()
            .allow_net("127.0.0.0/8".parse().unwrap())
            .http2(http2)
            .dns_cache_ttl(Duration::ZERO)
            .build();
        let ep = endpoint_at(&d, &host, a.port()).await;
        assert_eq!(env.send(&d, &ep, 1).await.1, DELIVERED);
        assert_eq!((a.count(), a.connections_accepted()), (1, 1));

        // The name moves: the connection pooled for 127.0.0.1 is not the name's address any more.
        ctx.resolver.insert(&host, vec![[127, 0, 0, 3].into()]);
        assert_eq!(env.send(&d, &ep, 2).await.1, DELIVERED);
        assert_eq!((b.count(), b.connections_accepted()), (1, 1), "http2={http2}");
        assert_eq!((a.count(), a.connections_accepted()), (1, 1));
        assert_eq!(b.received()[0].sni.as_deref(), Some(host.as_str()));

        // And back: the connection still pooled for (name, 127.0.0.1) is valid again and reused.
        ctx.resolver.insert(&host, vec![[127, 0, 0, 1].into()]);
        assert_eq!(env.send(&d, &ep, 3).await.1, DELIVERED);
        assert_eq!((a.count(), a.connections_accepted()), (2, 1));
        assert_eq!(b.count(), 1);
    }
}

async fn dns_cache_keeps_only_vetted_answers(engine: Engine) {
    let env = Env::new(engine).await;
    let ctx = &env.ctx;
    let d = ctx.builder().retry_policy(one_attempt()).build(); // default TTL (30 s)
    let host = "cached.test";
    let r = env.receiver_on([127, 0, 0, 1], host).await;
    let port = r.port();
    ctx.resolver.insert(host, vec![[127, 0, 0, 1].into()]);
    let ep = endpoint_at(&d, host, port).await;

    // A failed lookup is not cached: the next attempt resolves again and succeeds.
    ctx.resolver.insert(host, vec![]);
    let (id, report) = env.send(&d, &ep, 1).await;
    assert_eq!(report, DEAD);
    assert_eq!(
        d.list_attempts(&id).await.unwrap()[0].error.as_deref(),
        Some("dns lookup failed")
    );
    // A refusal is not cached either.
    ctx.resolver.insert(host, vec![[127, 0, 0, 2].into()]);
    assert_eq!(env.send(&d, &ep, 2).await.1, DEAD);
    ctx.resolver.insert(host, vec![[127, 0, 0, 1].into()]);
    let before = ctx.resolver.lookups();
    assert_eq!(env.send(&d, &ep, 3).await.1, DELIVERED);
    assert_eq!(ctx.resolver.lookups(), before + 1);

    // A vetted answer is: further deliveries within the TTL do not resolve.
    for n in 4..8 {
        assert_eq!(env.send(&d, &ep, n).await.1, DELIVERED);
    }
    assert_eq!(ctx.resolver.lookups(), before + 1);

    // With the cache off, every attempt resolves.
    let uncached = ctx.builder().dns_cache_ttl(Duration::ZERO).build();
    let before = ctx.resolver.lookups();
    for n in 8..11 {
        assert_eq!(env.send(&uncached, &ep, n).await.1, DELIVERED);
    }
    assert_eq!(ctx.resolver.lookups(), before + 3);

    // IP literals never touch the resolver.
    let literal = endpoint_at(&d, "127.0.0.1", port).await;
    let before = ctx.resolver.lookups();
    assert_eq!(env.send(&uncached, &literal, 11).await.1, DELIVERED);
    assert_eq!(ctx.resolver.lookups(), before);
}

async fn idle_connections_expire_and_reuse_can_be_disabled(engine: Engine) {
    let env = Env::new(engine).await;
    let ctx = &env.ctx;
    for http2 in [true, false] {
        let r = env.receiver_on([127, 0, 0, 1], RECEIVER_HOST).await;
        let d = ctx
            .builder()
            .http2(http2)
            .pool_idle_timeout(Duration::from_millis(200))
            .build();
        let ep = endpoint_at(&d, RECEIVER_HOST, r.port()).await;
        assert_eq!(env.send(&d, &ep, 1).await.1, DELIVERED);
        assert_eq!(env.send(&d, &ep, 2).await.1, DELIVERED);
        assert_eq!(r.connections_accepted(), 1, "http2={http2}");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(env.send(&d, &ep, 3).await.1, DELIVERED);
        assert_eq!(r.connections_accepted(), 2, "an expired connection was reused");

        let r = env.receiver_on([127, 0, 0, 1], RECEIVER_HOST).await;
        let d = ctx
            .builder()
            .http2(http2)
            .pool_idle_timeout(Duration::ZERO)
            .build();
        let ep = endpoint_at(&d, RECEIVER_HOST, r.port()).await;
        for n in 0..3 {
            assert_eq!(env.send(&d, &ep, n).await.1, DELIVERED);
        }
        assert_eq!(r.connections_accepted(), 3, "reuse disabled, http2={http2}");
    }
}

async fn hostile_endpoint_connection_is_not_reused_after_trickle_hang_or_endless_body(engine: Engine) {
    let env = Env::new(engine).await;
    let ctx = &env.ctx;
    let bad_replies = [
        Reply::Trickle {
            every: Duration::from_millis(50),
        },
        Reply::Hang,
        Reply::EndlessBody,
    ];
    for http2 in [false, true] {
        for bad in &bad_replies {
            let r = env.receiver_on([127, 0, 0, 1], RECEIVER_HOST).await;
            let d = ctx
                .builder()
                .http2(http2)
                .attempt_timeout(Duration::from_millis(1000))
                .retry_policy(one_attempt())
                .build();
            let ep = endpoint_at(&d, RECEIVER_HOST, r.port()).await;
            assert_eq!(env.send(&d, &ep, 1).await.1, DELIVERED);
            assert_eq!(r.connections_accepted(), 1);

            r.push_replies([bad.clone()]);
            let expected = match bad {
                Reply::EndlessBody => DELIVERED, // 200; only a bounded prefix of the body was read
                _ => DEAD,                       // timed out, its one attempt spent
            };
            assert_eq!(env.send(&d, &ep, 2).await.1, expected, "{bad:?} http2={http2}");

            // The next normal delivery succeeds on a good connection.
            assert_eq!(env.send(&d, &ep, 3).await.1, DELIVERED, "{bad:?} http2={http2}");
            assert_eq!(r.count(), 3);
            let conns = r.connections_accepted();
            if http2 {
                // Only the stream was reset; the multiplexed connection stays in use.
                assert_eq!(conns, 1, "{bad:?}");
            } else {
                // The connection with an unfinished response was closed, not reused.
                assert_eq!(conns, 2, "{bad:?}");
            }
        }
    }
}
