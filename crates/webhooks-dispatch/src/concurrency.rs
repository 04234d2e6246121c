//! In-flight caps per endpoint, per owner and per destination host, shared by every drain and worker of one
//! dispatcher configuration.
//!
//! One slow or hanging receiver must not take every delivery slot. Each endpoint may have at most its cap of
//! messages claimed by this process at once: claims ask the database for no more than each endpoint's free
//! slots (the counts come from [`EndpointLimiter::held`]), so an endpoint's surplus stays in the table,
//! unleased, instead of occupying worker slots while it waits. On top of that, all the endpoints of one owner
//! (a tenant), and all those on one destination host (a shared receiver, or one tenant's many endpoints on a
//! tarpit), may have at most their caps of attempts in flight together, so at least what remains stays for
//! everyone else. A semaphore per endpoint, owner and host bounds the attempts actually in flight, which
//! keeps each cap exact even when two drains of this process race; an endpoint whose owner or host has no
//! free slot is reported to claims as full, so they take nothing more of it meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The caps, each at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Caps {
    pub per_endpoint: usize,
    pub per_owner: usize,
    pub per_host: usize,
}

/// Where one claimed message goes: the keys its caps are counted under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub endpoint_id: String,
    pub owner_id: Arc<str>,
    pub host: Arc<str>,
}

/// Semaphores for one kind of key, created on first use and forgotten when idle.
struct Gates {
    cap: usize,
    // A std mutex: held only for map updates, never across an await.
    map: Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
}

/// One in-flight attempt's hold on one key's capacity; forgets the key when nobody uses it any more.
struct GatePermit {
    gates: Arc<Gates>,
    key: Arc<str>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Gates {
    fn new(cap: usize) -> Arc<Self> {
        Arc::new(Gates {
            cap: cap.max(1),
            map: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<Semaphore>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn semaphore(&self, key: &str) -> Arc<Semaphore> {
        let mut map = self.lock();
        if let Some(s) = map.get(key) {
            return s.clone();
        }
        let s = Arc::new(Semaphore::new(self.cap));
        map.insert(key.into(), s.clone());
        s
    }

    async fn acquire(self: &Arc<Self>, key: &str) -> GatePermit {
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = self
            .semaphore(key)
            .acquire_owned()
            .await
            .expect("cap semaphores are never closed");
        self.permit(key, permit)
    }

    fn try_acquire(self: &Arc<Self>, key: &str) -> Option<GatePermit> {
        let permit = self.semaphore(key).try_acquire_owned().ok();
        let got = permit.map(|p| self.permit(key, p));
        if got.is_none() {
            self.forget_if_idle(key);
        }
        got
    }

    fn permit(self: &Arc<Self>, key: &str, permit: OwnedSemaphorePermit) -> GatePermit {
        GatePermit {
            gates: self.clone(),
            key: key.into(),
            permit: Some(permit),
        }
    }

    /// Whether `key` has every slot taken right now.
    fn is_full(&self, key: &str) -> bool {
        self.lock().get(key).is_some_and(|s| s.available_permits() == 0)
    }

    fn forget_if_idle(&self, key: &str) {
        let mut map = self.lock();
        // Only the map holds it and every slot is free: nobody is using or waiting for this key.
        let idle = map
            .get(key)
            .is_some_and(|s| Arc::strong_count(s) == 1 && s.available_permits() == self.cap);
        if idle {
            map.remove(key);
        }
    }
}

impl Drop for GatePermit {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.gates.forget_if_idle(&self.key);
    }
}

/// One in-flight attempt's slots on its endpoint, owner and host; all released on drop.
pub(crate) struct Slot {
    _endpoint: GatePermit,
    _owner: GatePermit,
    _host: GatePermit,
}

/// What this process holds of one endpoint: claimed messages not yet finished, and where they go.
struct HeldEndpoint {
    n: usize,
    owner_id: Arc<str>,
    host: Arc<str>,
}

pub(crate) struct EndpointLimiter {
    caps: Caps,
    endpoints: Arc<Gates>,
    owners: Arc<Gates>,
    hosts: Arc<Gates>,
    held: Mutex<HashMap<String, HeldEndpoint>>,
}

/// Counts one claimed message against its endpoint until dropped (when its attempt is over).
pub(crate) struct Held {
    limiter: Arc<EndpointLimiter>,
    endpoint_id: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.limiter.lock_held();
        if let Some(h) = held.get_mut(&self.endpoint_id) {
            h.n -= 1;
            if h.n == 0 {
                held.remove(&self.endpoint_id);
            }
        }
    }
}

/// What [`EndpointLimiter::held`] reports for an endpoint whose owner or host has no free slot: more than any
/// quota, even after a worker's claim-ahead allowance is taken off it.
const FULL: i64 = i64::MAX / 2;

impl EndpointLimiter {
    pub(crate) fn new(caps: Caps) -> Self {
        EndpointLimiter {
            caps,
            endpoints: Gates::new(caps.per_endpoint),
            owners: Gates::new(caps.per_owner),
            hosts: Gates::new(caps.per_host),
            held: Mutex::new(HashMap::new()),
        }
    }

    /// The per-endpoint cap.
    pub(crate) fn cap(&self) -> usize {
        self.caps.per_endpoint.max(1)
    }

    #[cfg(test)]
    pub(crate) fn caps(&self) -> Caps {
        self.caps
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, HashMap<String, HeldEndpoint>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a free slot on the route's endpoint, then its owner, then its host. Always in that order,
    /// so two waiters can never each hold what the other waits for.
    pub(crate) async fn acquire(&self, route: &Route) -> Slot {
        let endpoint = self.endpoints.acquire(&route.endpoint_id).await;
        let owner = self.owners.acquire(&route.owner_id).await;
        let host = self.hosts.acquire(&route.host).await;
        Slot {
            _endpoint: endpoint,
            _owner: owner,
            _host: host,
        }
    }

    /// The route's slots if all three are free now; otherwise none is taken.
    pub(crate) fn try_acquire(&self, route: &Route) -> Option<Slot> {
        let endpoint = self.endpoints.try_acquire(&route.endpoint_id)?;
        let owner = self.owners.try_acquire(&route.owner_id)?;
        let host = self.hosts.try_acquire(&route.host)?;
        Some(Slot {
            _endpoint: endpoint,
            _owner: owner,
            _host: host,
        })
    }

    /// Whether the route's owner or host has every slot in flight (its endpoint's own cap aside).
    pub(crate) fn owner_or_host_full(&self, route: &Route) -> bool {
        self.owners.is_full(&route.owner_id) || self.hosts.is_full(&route.host)
    }

    /// Owners with every one of their slots in flight in this process: claims pass over all their endpoints
    /// (also those this process holds nothing of yet), so a tarpit owner's messages do not fill the worker's
    /// queues while they wait.
    pub(crate) fn full_owners(&self) -> Vec<String> {
        let owners = self.owners.lock();
        owners
            .iter()
            .filter(|(_, s)| s.available_permits() == 0)
            .map(|(o, _)| o.to_string())
            .collect()
    }

    /// Registers a message just claimed for the route's endpoint.
    pub(crate) fn hold(self: &Arc<Self>, route: &Route) -> Held {
        self.lock_held()
            .entry(route.endpoint_id.clone())
            .or_insert_with(|| HeldEndpoint {
                n: 0,
                owner_id: route.owner_id.clone(),
                host: route.host.clone(),
            })
            .n += 1;
        Held {
            limiter: self.clone(),
            endpoint_id: route.endpoint_id.clone(),
        }
    }

    /// Endpoints this process holds claimed messages for, and how many: what the next claim must respect.
    /// An endpoint whose owner or host has every slot in flight counts as full.
    pub(crate) fn held(&self) -> (Vec<String>, Vec<i64>) {
        let held = self.lock_held();
        held.iter()
            .map(|(id, h)| {
                let n = if self.owners.is_full(&h.owner_id) || self.hosts.is_full(&h.host) {
                    FULL
                } else {
                    i64::try_from(h.n).unwrap_or(FULL)
                };
                (id.clone(), n)
            })
            .unzip()
    }
}

/// The host part of a stored endpoint URL, the key of its per-host cap (the whole URL if it has none, which a
/// vetted URL always has).
pub(crate) fn host_of(url: &str) -> Arc<str> {
    match url::Url::parse(url) {
        Ok(u) => u.host_str().unwrap_or(url).to_ascii_lowercase().into(),
        Err(_) => url.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn route(endpoint: &str, owner: &str, host: &str) -> Route {
        Route {
            endpoint_id: endpoint.to_owned(),
            owner_id: owner.into(),
            host: host.into(),
        }
    }

    fn limiter(per_endpoint: usize, per_owner: usize, per_host: usize) -> Arc<EndpointLimiter> {
        Arc::new(EndpointLimiter::new(Caps {
            per_endpoint,
            per_owner,
            per_host,
        }))
    }

    #[tokio::test]
    async fn endpoint_cap_is_enforced_and_idle_keys_are_forgotten() {
        let limiter = limiter(2, 10, 10);
        let r = route("ep_a", "o", "h");
        let a = limiter.acquire(&r).await;
        let b = limiter.acquire(&r).await;
        let third = tokio::time::timeout(Duration::from_millis(50), limiter.acquire(&r)).await;
        assert!(third.is_err(), "a third concurrent permit was granted");
        assert!(limiter.try_acquire(&r).is_none());
        drop(a);
        drop(b);
        for gates in [&limiter.endpoints, &limiter.owners, &limiter.hosts] {
            assert!(gates.lock().is_empty(), "idle key kept in the map");
        }
    }

    #[tokio::test]
    async fn an_owner_cap_bounds_all_its_endpoints_together_and_spares_other_owners() {
        let limiter = limiter(4, 3, 100);
        let slots: Vec<Slot> = (0..3)
            .map(|i| {
                limiter
                    .try_acquire(&route(&format!("ep_{i}"), "tarpit", &format!("h{i}")))
                    .unwrap()
            })
            .collect();
        assert!(
            limiter.try_acquire(&route("ep_9", "tarpit", "h9")).is_none(),
            "a fourth attempt of the owner started on a fresh endpoint"
        );
        assert!(
            limiter.try_acquire(&route("ep_x", "other", "h0")).is_some(),
            "another owner was held back"
        );
        // Nothing of the refused attempt stays taken: its endpoint's slot was given back.
        assert!(!limiter.endpoints.lock().contains_key("ep_9"));
        drop(slots);
        assert!(limiter.try_acquire(&route("ep_9", "tarpit", "h9")).is_some());
    }

    #[tokio::test]
    async fn a_host_cap_bounds_every_owner_on_that_host() {
        let limiter = limiter(4, 100, 2);
        let _a = limiter
            .try_acquire(&route("ep_a", "o1", "shared.example"))
            .unwrap();
        let _b = limiter
            .try_acquire(&route("ep_b", "o2", "shared.example"))
            .unwrap();
        assert!(limiter
            .try_acquire(&route("ep_c", "o3", "shared.example"))
            .is_none());
        assert!(limiter
            .try_acquire(&route("ep_c", "o3", "other.example"))
            .is_some());
    }

    #[test]
    fn held_counts_follow_claims() {
        let limiter = limiter(2, 10, 10);
        let a1 = limiter.hold(&route("ep_a", "o", "h"));
        let _a2 = limiter.hold(&route("ep_a", "o", "h"));
        let b = limiter.hold(&route("ep_b", "o", "h"));
        let (mut ids, counts) = limiter.held();
        let mut pairs: Vec<_> = ids.drain(..).zip(counts).collect();
        pairs.sort();
        assert_eq!(pairs, [("ep_a".to_owned(), 2), ("ep_b".to_owned(), 1)]);
        drop(a1);
        drop(b);
        assert_eq!(limiter.held(), (vec!["ep_a".to_owned()], vec![1]));
    }

    #[tokio::test]
    async fn endpoints_of_a_full_owner_or_host_are_reported_full_to_claims() {
        let limiter = limiter(4, 1, 10);
        let _held = limiter.hold(&route("ep_a", "tarpit", "h1"));
        let _other = limiter.hold(&route("ep_b", "fine", "h2"));
        let _slot = limiter.try_acquire(&route("ep_c", "tarpit", "h3")).unwrap();
        let (ids, counts) = limiter.held();
        let report: HashMap<_, _> = ids.into_iter().zip(counts).collect();
        assert_eq!(report["ep_a"], FULL, "the owner has no free slot");
        assert_eq!(report["ep_b"], 1);
    }

    #[test]
    fn hosts_are_keyed_case_insensitively() {
        assert_eq!(&*host_of("https://Hooks.Example.com:8443/x"), "hooks.example.com");
        assert_eq!(&*host_of("https://[::1]/"), "[::1]");
    }
}
