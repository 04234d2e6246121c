//! Per-endpoint concurrency caps, shared by every drain and worker of one dispatcher configuration.
//!
//! One slow or hanging endpoint must not take every delivery slot: each endpoint may have at most `cap`
//! messages claimed by this process at once. Claims ask the database for no more than each endpoint's free
//! slots (the counts come from [`EndpointLimiter::held`]), so an endpoint's surplus stays in the table,
//! unleased, instead of occupying worker slots while it waits. A semaphore per endpoint additionally bounds
//! the attempts actually in flight, which keeps the cap exact even when two drains of this process race.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(crate) struct EndpointLimiter {
    cap: usize,
    // Std mutexes: held only for map updates, never across an await.
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    held: Mutex<HashMap<String, usize>>,
}

/// Counts one claimed message against its endpoint until dropped (when its attempt is over).
pub(crate) struct Held {
    limiter: Arc<EndpointLimiter>,
    endpoint_id: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.limiter.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = held.get_mut(&self.endpoint_id) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.endpoint_id);
            }
        }
    }
}

/// One in-flight attempt's hold on its endpoint's capacity; releases (and forgets idle endpoints) on drop.
pub(crate) struct EndpointPermit<'a> {
    limiter: &'a EndpointLimiter,
    endpoint_id: String,
    permit: Option<OwnedSemaphorePermit>,
}

impl EndpointLimiter {
    pub(crate) fn new(cap: usize) -> Self {
        EndpointLimiter {
            cap: cap.max(1),
            slots: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Semaphore>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a free slot on `endpoint_id`.
    pub(crate) async fn acquire(&self, endpoint_id: &str) -> EndpointPermit<'_> {
        let semaphore = self
            .lock()
            .entry(endpoint_id.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.cap)))
            .clone();
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = semaphore
            .acquire_owned()
            .await
            .expect("endpoint semaphore is never closed");
        EndpointPermit {
            limiter: self,
            endpoint_id: endpoint_id.to_owned(),
            permit: Some(permit),
        }
    }

    /// Registers a message just claimed for `endpoint_id`.
    pub(crate) fn hold(self: &Arc<Self>, endpoint_id: &str) -> Held {
        *self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(endpoint_id.to_owned())
            .or_insert(0) += 1;
        Held {
            limiter: self.clone(),
            endpoint_id: endpoint_id.to_owned(),
        }
    }

    /// Endpoints this process holds claimed messages for, and how many: what the next claim must respect.
    pub(crate) fn held(&self) -> (Vec<String>, Vec<i64>) {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.iter()
            .map(|(id, n)| (id.clone(), i64::try_from(*n).unwrap_or(i64::MAX)))
            .unzip()
    }
}

impl Drop for EndpointPermit<'_> {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut slots = self.limiter.lock();
        let idle = slots.get(&self.endpoint_id).is_some_and(|s| {
            // Only the map holds it and every slot is free: nobody is using or waiting for this endpoint.
            Arc::strong_count(s) == 1 && s.available_permits() == self.limiter.cap
        });
        if idle {
            slots.remove(&self.endpoint_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cap_is_enforced_and_idle_endpoints_are_forgotten() {
        let limiter = EndpointLimiter::new(2);
        let a = limiter.acquire("ep_a").await;
        let b = limiter.acquire("ep_a").await;
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), limiter.acquire("ep_a")).await;
        assert!(third.is_err(), "a third concurrent permit was granted");
        drop(a);
        drop(b);
        assert!(limiter.lock().is_empty(), "idle endpoint kept in the map");
    }

    #[test]
    fn held_counts_follow_claims() {
        let limiter = Arc::new(EndpointLimiter::new(2));
        let a1 = limiter.hold("ep_a");
        let _a2 = limiter.hold("ep_a");
        let b = limiter.hold("ep_b");
        let (mut ids, counts) = limiter.held();
        let mut pairs: Vec<_> = ids.drain(..).zip(counts).collect();
        pairs.sort();
        assert_eq!(pairs, [("ep_a".to_owned(), 2), ("ep_b".to_owned(), 1)]);
        drop(a1);
        drop(b);
        assert_eq!(limiter.held(), (vec!["ep_a".to_owned()], vec![1]));
    }
}
