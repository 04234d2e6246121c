//! Per-endpoint concurrency caps, shared by every drain and worker of one dispatcher configuration.
//!
//! One slow or hanging endpoint must not take every delivery slot: each endpoint may have at most `cap`
//! attempts in flight in this process. Claims skip endpoints that are already at their cap, so their messages
//! stay in the table (unleased) for later instead of occupying slots while they wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(crate) struct EndpointLimiter {
    cap: usize,
    // A std mutex: it is held only for map lookups, never across an await.
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
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

    /// Endpoints with no free slot: a claim should skip them.
    pub(crate) fn saturated(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, s)| s.available_permits() == 0)
            .map(|(id, _)| id.clone())
            .collect()
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
        assert_eq!(limiter.saturated(), ["ep_a"]);
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), limiter.acquire("ep_a")).await;
        assert!(third.is_err(), "a third concurrent permit was granted");
        drop(a);
        assert!(limiter.saturated().is_empty());
        drop(b);
        assert!(limiter.lock().is_empty(), "idle endpoint kept in the map");
    }
}
