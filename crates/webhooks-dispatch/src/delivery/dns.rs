//! A small cache of *vetted* DNS answers, so thousands of deliveries a second to one host do not cost
//! thousands of lookups.
//!
//! Security reasoning:
//! - Only answers that [`vet`](crate::ssrf::vet) accepted in full are stored. A lookup failure or a refusal
//!   is never cached, so a transient failure does not stick and, more importantly, nothing that was refused
//!   can ever come back out of the cache as if it had been accepted.
//! - Entries live for a bounded TTL (the [`Resolver`](crate::ssrf::Resolver) seam does not report DNS TTLs,
//!   so the operator's bound is the only one). That bound is exactly how long a DNS change — including a
//!   rebinding to a refused address — can go unnoticed; `Duration::ZERO` turns the cache off for deployments
//!   that want every attempt to see the current answer.
//! - The caller still checks every cached address against the [`AddressPolicy`](crate::ssrf::AddressPolicy)
//!   before use, so the cache can never be the reason a refused address is contacted.
//! - The number of entries is bounded, because the set of host names is chosen by tenants.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Most host/port pairs remembered at once; beyond this, expired and then oldest entries are evicted.
pub(super) const MAX_ENTRIES: usize = 10_000;

/// Vetted socket addresses per (host name, port), each valid until its expiry.
pub(super) struct DnsCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<(String, u16), Entry>>,
}

struct Entry {
    addrs: Arc<[SocketAddr]>,
    expires: Instant,
}

impl DnsCache {
    /// A cache keeping answers for `ttl` (zero: keep nothing) and at most `capacity` of them.
    pub(super) fn new(ttl: Duration, capacity: usize) -> Self {
        DnsCache {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.capacity > 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(String, u16), Entry>> {
        // Every critical section is a single map operation, so a panic elsewhere cannot leave it half-updated.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The vetted answer for `host:port`, if one is still fresh at `now`. An expired entry is removed.
    pub(super) fn get(&self, host: &str, port: u16, now: Instant) -> Option<Arc<[SocketAddr]>> {
        if !self.enabled() {
            return None;
        }
        let key = (host.to_owned(), port);
        let mut entries = self.lock();
        match entries.get(&key) {
            Some(entry) if entry.expires > now => Some(entry.addrs.clone()),
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers an answer that passed vetting in full. Callers must never pass anything else.
    pub(super) fn insert(&self, host: &str, port: u16, addrs: Arc<[SocketAddr]>, now: Instant) {
        if !self.enabled() || addrs.is_empty() {
            return;
        }
        // An expiry past the clock's range (a TTL no builder passes) is not cached: answers are then
        // re-resolved, never kept forever.
        let Some(expires) = now.checked_add(self.ttl) else {
            return;
        };
        let key = (host.to_owned(), port);
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, entry| entry.expires > now);
            if entries.len() >= self.capacity {
                // All fresh: drop the one closest to expiry, which (with one TTL for all) is the oldest.
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.expires)
                    .map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(key, Entry { addrs, expires });
    }

    /// Forgets `host:port`, e.g. when its cached answer no longer passes the policy.
    pub(super) fn remove(&self, host: &str, port: u16) {
        self.lock().remove(&(host.to_owned(), port));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(last: u8) -> Arc<[SocketAddr]> {
        Arc::from(vec![SocketAddr::from(([192, 0, 2, last], 443))])
    }

    #[test]
    fn answers_are_kept_for_the_ttl_and_no_longer() {
        let cache = DnsCache::new(Duration::from_secs(30), 10);
        let t0 = Instant::now();
        assert!(cache.get("a.test", 443, t0).is_none());
        cache.insert("a.test", 443, addrs(1), t0);
        assert_eq!(
            cache.get("a.test", 443, t0 + Duration::from_secs(29)),
            Some(addrs(1))
        );
        assert!(
            cache.get("a.test", 8443, t0).is_none(),
            "the port is part of the key"
        );
        assert!(cache.get("a.test", 443, t0 + Duration::from_secs(30)).is_none());
        assert_eq!(cache.len(), 0, "an expired entry is removed when found");
    }

    /// `now + ttl` panicked for a TTL past the clock's range; the builder clamps it, and the cache alone still
    /// neither panics nor keeps such an answer forever.
    #[test]
    fn a_ttl_beyond_the_clock_neither_panics_nor_keeps_the_answer_forever() {
        let cache = DnsCache::new(Duration::MAX, 10);
        let t0 = Instant::now();
        cache.insert("a.test", 443, addrs(1), t0);
        assert!(cache.get("a.test", 443, t0).is_none());
    }

    #[test]
    fn zero_ttl_disables_caching() {
        let cache = DnsCache::new(Duration::ZERO, 10);
        let t0 = Instant::now();
        cache.insert("a.test", 443, addrs(1), t0);
        assert!(cache.get("a.test", 443, t0).is_none());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn size_is_bounded_evicting_expired_then_oldest() {
        let cache = DnsCache::new(Duration::from_secs(30), 3);
        let t0 = Instant::now();
        cache.insert("old.test", 443, addrs(1), t0);
        cache.insert("b.test", 443, addrs(2), t0 + Duration::from_secs(10));
        cache.insert("c.test", 443, addrs(3), t0 + Duration::from_secs(20));
        // Full and nothing expired: the oldest goes.
        cache.insert("d.test", 443, addrs(4), t0 + Duration::from_secs(25));
        assert_eq!(cache.len(), 3);
        assert!(cache.get("old.test", 443, t0 + Duration::from_secs(25)).is_none());
        // Full with expired entries: they go first.
        let later = t0 + Duration::from_secs(45);
        cache.insert("e.test", 443, addrs(5), later);
        assert_eq!(
            cache.len(),
            3,
            "b (expired at 40 s) made room; c and d are still fresh"
        );
        assert!(cache.get("b.test", 443, later).is_none());
        assert!(cache.get("c.test", 443, later).is_some());
        assert!(cache.get("d.test", 443, later).is_some());
        assert!(cache.get("e.test", 443, later).is_some());
    }

    #[test]
    fn replacing_an_entry_does_not_evict_others() {
        let cache = DnsCache::new(Duration::from_secs(30), 2);
        let t0 = Instant::now();
        cache.insert("a.test", 443, addrs(1), t0);
        cache.insert("b.test", 443, addrs(2), t0);
        cache.insert("a.test", 443, addrs(3), t0);
        assert_eq!(cache.get("a.test", 443, t0), Some(addrs(3)));
        assert_eq!(cache.get("b.test", 443, t0), Some(addrs(2)));
        cache.remove("a.test", 443);
        assert!(cache.get("a.test", 443, t0).is_none());
    }
}
