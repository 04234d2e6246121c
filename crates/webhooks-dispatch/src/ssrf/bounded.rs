//! Bounds on DNS lookups: a deadline for each, and a cap on how many are in flight at once.
//!
//! The system resolver (`getaddrinfo`, through `tokio::net::lookup_host`) blocks a thread of tokio's blocking
//! pool per lookup, the pool SQLite statements and file I/O share. Without bounds, a tenant whose name server
//! never answers could hold a registration for as long as `getaddrinfo` retries, and many of them could take
//! the whole pool. The bounds wrap every resolver, injected ones included: the dispatcher cannot tell whether
//! a resolver blocks, and with the DNS cache in front of deliveries lookups are rare enough that a cap costs
//! nothing when they are fast.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::{ResolveFuture, Resolver};

/// Longest a lookup keeps its slot after it started, answered or not. Giving up on a system lookup does not
/// stop its thread, so the slot stays taken while the thread may still be busy; `getaddrinfo` gives up by
/// itself well within this (resolv.conf's timeout × attempts per name server), and a resolver that never
/// answers at all gets its slot back here instead of keeping it forever. At least the longest lookup deadline.
const SLOT_HOLD_LIMIT: Duration = Duration::from_secs(60);

/// A [`Resolver`] whose lookups each end within `timeout` (waiting for a slot included) and of which at most
/// `slots` run at once.
pub(crate) struct BoundedResolver {
    inner: Arc<dyn Resolver>,
    timeout: Duration,
    slots: Arc<Semaphore>,
}

impl BoundedResolver {
    /// Bounds `inner`'s lookups by `timeout` each and `slots` at once (at least one).
    pub(crate) fn new(inner: Arc<dyn Resolver>, timeout: Duration, slots: usize) -> Self {
        BoundedResolver {
            inner,
            timeout,
            slots: Arc::new(Semaphore::new(slots.clamp(1, Semaphore::MAX_PERMITS))),
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "dns lookup timed out")
}

impl Resolver for BoundedResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a> {
        Box::pin(async move {
            let lookup = async {
                let slot = self
                    .slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| io::Error::other("dns lookup slots closed"))?;
                let (inner, host) = (self.inner.clone(), host.to_owned());
                // On a task of its own, which holds the slot until the resolver answers (or the hold limit):
                // the caller's deadline drops only its wait for the answer, never the slot of a lookup that
                // may still occupy a thread.
                let answer = tokio::spawn(async move {
                    let _slot = slot;
                    tokio::time::timeout(SLOT_HOLD_LIMIT, inner.resolve(&host, port)).await
                });
                match answer.await {
                    Ok(Ok(answer)) => answer,
                    Ok(Err(_held_too_long)) => Err(timed_out()),
                    Err(_panicked) => Err(io::Error::other("dns lookup failed")),
                }
            };
            tokio::time::timeout(self.timeout, lookup)
                .await
                .unwrap_or_else(|_| Err(timed_out()))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Lookups that wait for a permit of `open` (closed: all pass), counting how many are inside at once.
    struct Blocking {
        inside: AtomicUsize,
        most: AtomicUsize,
        open: Semaphore,
    }

    impl Resolver for Blocking {
        fn resolve<'a>(&'a self, _host: &'a str, _port: u16) -> ResolveFuture<'a> {
            Box::pin(async move {
                let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
                self.most.fetch_max(now, Ordering::SeqCst);
                let _ = self.open.acquire().await;
                self.inside.fetch_sub(1, Ordering::SeqCst);
                Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
            })
        }
    }

    /// A caller that gives up does not give the slot back while its lookup is still running: a system lookup
    /// would still hold a blocking thread. The next lookup waits for the slot, within its own deadline.
    #[tokio::test]
    async fn a_timed_out_lookup_keeps_its_slot_until_the_resolver_answers() {
        let blocking = Arc::new(Blocking {
            inside: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            open: Semaphore::new(0),
        });
        let bounded = BoundedResolver::new(blocking.clone(), Duration::from_millis(50), 1);
        for _ in 0..3 {
            let err = bounded.resolve("slow.test", 443).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        }
        assert_eq!(
            blocking.most.load(Ordering::SeqCst),
            1,
            "one lookup in the resolver at a time"
        );
        blocking.open.close();
        // The first lookup's task now ends and frees the slot.
        let started = tokio::time::Instant::now();
        loop {
            match bounded.resolve("slow.test", 443).await {
                Ok(ips) => break assert_eq!(ips, [IpAddr::V4(Ipv4Addr::LOCALHOST)]),
                Err(_) if started.elapsed() < Duration::from_secs(5) => continue,
                Err(e) => panic!("the slot never came back: {e}"),
            }
        }
        assert_eq!(blocking.most.load(Ordering::SeqCst), 1);
    }
}
