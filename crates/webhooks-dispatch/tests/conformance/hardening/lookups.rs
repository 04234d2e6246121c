//! Registration's DNS lookups: a deadline, and a cap on how many are in flight at once.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use webhooks_dispatch::ssrf::{ResolveFuture, Resolver};
use webhooks_dispatch::{NewEndpoint, UpdateEndpoint};

use super::shared;
use crate::support::{Ctx, Engine};

/// A resolver whose lookups never answer (a hostile or broken name server).
struct Silent;

impl Resolver for Silent {
    fn resolve<'a>(&'a self, _host: &'a str, _port: u16) -> ResolveFuture<'a> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_that_never_answers_fails_registration_with_a_retryable_timeout_in_time() {
    let ctx = Ctx::new(Engine::Sqlite).await;
    let deadline = Duration::from_millis(300);
    let d = ctx.builder().build();
    let (ep, _) = ctx.endpoint(&d).await;
    let d = ctx
        .builder()
        .resolver(shared(Silent))
        .dns_timeout(deadline)
        .build();
    let started = Instant::now();
    let register = d.register_endpoint(NewEndpoint::new("o", "https://silent.test/hook"));
    let err = tokio::time::timeout(deadline * 3, register)
        .await
        .expect("registration waited past its lookup deadline")
        .unwrap_err();
    assert_eq!((err.code(), err.http_status()), ("dns_timeout", 503), "{err}");
    let waited = started.elapsed();
    assert!(
        waited >= deadline && waited < deadline + Duration::from_secs(2),
        "{waited:?}"
    );

    let started = Instant::now();
    let update = UpdateEndpoint {
        url: Some("https://silent.test/other".to_owned()),
        ..UpdateEndpoint::default()
    };
    let err = tokio::time::timeout(deadline * 3, d.update_endpoint(&ep, update))
        .await
        .expect("an update waited past its lookup deadline")
        .unwrap_err();
    assert_eq!(err.code(), "dns_timeout", "{err}");
    let waited = started.elapsed();
    assert!(
        waited >= deadline && waited < deadline + Duration::from_secs(2),
        "{waited:?}"
    );
    assert_eq!(
        d.endpoint(&ep).await.unwrap().url,
        ctx.url(),
        "a timed-out update changes nothing"
    );
}

/// Lookups that wait until the gate opens, counting how many are inside at once (a lookup dropped while
/// waiting leaves, too).
struct Gate {
    inside: AtomicUsize,
    most: AtomicUsize,
    open: Semaphore,
}

impl Default for Gate {
    fn default() -> Gate {
        Gate {
            inside: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            open: Semaphore::new(0),
        }
    }
}

struct Inside<'a>(&'a Gate);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.inside.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Resolver for Gate {
    fn resolve<'a>(&'a self, _host: &'a str, _port: u16) -> ResolveFuture<'a> {
        Box::pin(async move {
            let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            let _inside = Inside(self);
            // Closed means open: every waiter (and every later lookup) passes.
            let _ = self.open.acquire().await;
            Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_beyond_the_cap_wait_outside_the_resolver() {
    let ctx = Ctx::new(Engine::Sqlite).await;
    let cap = webhooks_dispatch::DEFAULT_CONCURRENT_LOOKUPS;
    let gate = Arc::new(Gate::default());
    let d = ctx.builder().resolver(gate.clone()).build();
    let mut registrations = tokio::task::JoinSet::new();
    for i in 0..=cap {
        let d = d.clone();
        registrations.spawn(async move {
            d.register_endpoint(NewEndpoint::new(format!("o{i}"), "https://gate.test/hook"))
                .await
        });
    }
    let waited = Instant::now();
    while gate.inside.load(Ordering::SeqCst) < cap && waited.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Time for a lookup beyond the cap to get in, if anything let it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        gate.most.load(Ordering::SeqCst),
        cap,
        "lookups inside the resolver at once"
    );
    gate.open.close();
    while let Some(done) = registrations.join_next().await {
        done.unwrap().expect("registration after the gate opened");
    }
}
