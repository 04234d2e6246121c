//! Claimed messages waiting for a delivery slot, queued per endpoint.
//!
//! A worker may claim ahead for an endpoint that keeps up (see [`super::pace`]), so an endpoint can have more
//! messages claimed than it may have attempts in flight. Those wait here, not in a delivery task: a task
//! waiting for its endpoint's slot would hold one of the worker's `concurrency` slots, and a hot endpoint's
//! surplus would then starve every other endpoint. So a message leaves its queue only when its endpoint has a
//! free in-flight slot, and endpoints take turns (round robin) so none waits behind another's backlog.

use std::collections::{HashMap, VecDeque};

use super::lease::Lost;
use crate::concurrency::{EndpointLimiter, Slot};
use crate::drain::Claimed;

/// Per-endpoint queues of claimed, not yet started messages, and the attempts each endpoint has in flight.
pub(super) struct ReadyQueues {
    /// Most attempts in flight per endpoint (the dispatcher's per-endpoint concurrency).
    cap: usize,
    queues: HashMap<String, VecDeque<Claimed>>,
    /// Endpoints with queued messages, in turn order; each appears at most once.
    turn: VecDeque<String>,
    in_flight: HashMap<String, usize>,
    queued: usize,
}

impl ReadyQueues {
    pub(super) fn new(cap: usize) -> Self {
        ReadyQueues {
            cap: cap.max(1),
            queues: HashMap::new(),
            turn: VecDeque::new(),
            in_flight: HashMap::new(),
            queued: 0,
        }
    }

    /// Messages queued (claimed, not started).
    pub(super) fn len(&self) -> usize {
        self.queued
    }

    pub(super) fn extend(&mut self, claimed: impl IntoIterator<Item = Claimed>) {
        for msg in claimed {
            let queue = self.queues.entry(msg.endpoint_id.clone()).or_default();
            if queue.is_empty() {
                self.turn.push_back(msg.endpoint_id.clone());
            }
            queue.push_back(msg);
            self.queued += 1;
        }
    }

    /// The next message whose endpoint, owner and host have a free slot (taken from `limiter` and returned
    /// with it), taking endpoints in turn; counts it as in flight until [`finished`](Self::finished). `None`
    /// when every queued message's endpoint, owner or host is at its cap.
    pub(super) fn start_next(&mut self, limiter: &EndpointLimiter) -> Option<(Claimed, Slot)> {
        for _ in 0..self.turn.len() {
            let endpoint = self.turn.pop_front()?;
            let running = self.in_flight.get(&endpoint).copied().unwrap_or(0);
            let queue = self
                .queues
                .get_mut(&endpoint)
                .expect("a queued endpoint has a queue");
            let slot = match running < self.cap {
                true => limiter.try_acquire(&queue.front().expect("a queued endpoint has a message").route),
                false => None,
            };
            let Some(slot) = slot else {
                self.turn.push_back(endpoint);
                continue;
            };
            let msg = queue.pop_front().expect("a queued endpoint has a message");
            if queue.is_empty() {
                self.queues.remove(&endpoint);
            } else {
                self.turn.push_back(endpoint.clone());
            }
            *self.in_flight.entry(endpoint).or_insert(0) += 1;
            self.queued -= 1;
            return Some((msg, slot));
        }
        None
    }

    /// An attempt started by [`start_next`](Self::start_next) for `endpoint_id` is over.
    pub(super) fn finished(&mut self, endpoint_id: &str) {
        if let Some(n) = self.in_flight.get_mut(endpoint_id) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(endpoint_id);
            }
        }
    }

    /// Queued messages that wait for their owner's or host's cap rather than for their endpoint's: they
    /// cannot start before one of that owner's (host's) attempts ends, so they do not count against the
    /// room for the next claim, which would otherwise shrink behind a tarpit tenant's queue while every other
    /// tenant's messages stay in the table. (Claims take nothing more of a full owner meanwhile, so this is at
    /// most what was claimed before it filled.)
    pub(super) fn waiting_for_owner_or_host(&self, limiter: &EndpointLimiter) -> usize {
        self.queues
            .values()
            .filter(|q| q.front().is_some_and(|m| limiter.owner_or_host_full(&m.route)))
            .map(VecDeque::len)
            .sum()
    }

    /// Removes and returns the queued messages of `endpoint_id` that its free slots cannot start now, newest
    /// first: it stopped keeping up, so its claim-ahead goes back to the table (where endpoint backoff reaches
    /// it and another claim takes it at the endpoint's pace) instead of waiting here, possibly past its lease,
    /// behind attempts that time out. What fits its free slots stays: it was claimed within its quota, and
    /// handing it back would only make the next claim take it again.
    pub(super) fn take_surplus(&mut self, endpoint_id: &str) -> Vec<Claimed> {
        let running = self.in_flight.get(endpoint_id).copied().unwrap_or(0);
        let keep = self.cap.saturating_sub(running);
        let Some(queue) = self.queues.get_mut(endpoint_id) else {
            return Vec::new();
        };
        if queue.len() <= keep {
            return Vec::new();
        }
        let surplus: Vec<Claimed> = queue.drain(keep..).collect();
        if queue.is_empty() {
            self.queues.remove(endpoint_id);
            self.turn.retain(|e| e != endpoint_id);
        }
        self.queued -= surplus.len();
        surplus
    }

    /// Drops the queued messages among `lost` (same id and token): their leases were taken over, so
    /// attempting them here too would only repeat another worker's delivery. Returns how many were queued.
    pub(super) fn drop_lost(&mut self, lost: &[Lost]) -> usize {
        let mut dropped = 0;
        for l in lost {
            let Some(queue) = self.queues.get_mut(&l.endpoint_id) else {
                continue;
            };
            let Some(at) = queue.iter().position(|m| m.id == l.id && m.token == l.token) else {
                continue;
            };
            // The claim's hold on its endpoint ends with it.
            drop(queue.remove(at));
            if queue.is_empty() {
                self.queues.remove(&l.endpoint_id);
                self.turn.retain(|e| *e != l.endpoint_id);
            }
            self.queued -= 1;
            dropped += 1;
        }
        dropped
    }

    /// Removes and returns every queued message (shutdown: they are handed back unattempted).
    pub(super) fn drain(&mut self) -> Vec<Claimed> {
        self.turn.clear();
        self.queued = 0;
        self.queues.drain().flat_map(|(_, q)| q).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::concurrency::Caps;
    use crate::drain::Claimed;
    use std::sync::Arc;

    /// A limiter that never binds before the queues' own per-endpoint cap does.
    fn roomy() -> Arc<EndpointLimiter> {
        limiter(100, 100)
    }

    fn limiter(per_owner: usize, per_host: usize) -> Arc<EndpointLimiter> {
        Arc::new(EndpointLimiter::new(Caps {
            per_endpoint: 100,
            per_owner,
            per_host,
        }))
    }

    /// Starts what can start, keeping the slots as running attempts would.
    fn start_all(q: &mut ReadyQueues, limiter: &EndpointLimiter, slots: &mut Vec<Slot>) -> Vec<String> {
        std::iter::from_fn(|| q.start_next(limiter))
            .map(|(m, slot)| {
                slots.push(slot);
                m.id
            })
            .collect()
    }

    fn queues(cap: usize, endpoints: &[(&str, usize)]) -> ReadyQueues {
        let mut q = ReadyQueues::new(cap);
        for (endpoint, n) in endpoints {
            q.extend((0..*n).map(|i| Claimed::for_test(&format!("{endpoint}-{i}"), endpoint)));
        }
        q
    }

    #[test]
    fn endpoints_take_turns_and_none_exceeds_its_cap() {
        let l = roomy();
        let mut q = queues(2, &[("hot", 10), ("a", 1), ("b", 1)]);
        let started: Vec<String> = std::iter::from_fn(|| q.start_next(&l))
            .map(|(m, _)| m.id)
            .collect();
        // Round robin: the hot endpoint's backlog does not go first in full; it stops at its cap of 2.
        assert_eq!(started, ["hot-0", "a-0", "b-0", "hot-1"]);
        assert_eq!(q.len(), 8);
        q.finished("hot");
        assert_eq!(q.start_next(&l).map(|(m, _)| m.id).as_deref(), Some("hot-2"));
        assert!(q.start_next(&l).is_none(), "hot is at its cap again");
    }

    #[test]
    fn only_what_the_free_slots_cannot_start_is_taken_back() {
        let l = roomy();
        let mut q = queues(2, &[("x", 5), ("y", 2)]);
        assert_eq!(q.start_next(&l).map(|(m, _)| m.id).as_deref(), Some("x-0"));
        // x: 1 in flight, so 1 free slot: x-1 stays, x-2..x-4 go back.
        let back: Vec<String> = q.take_surplus("x").into_iter().map(|m| m.id).collect();
        assert_eq!(back, ["x-2", "x-3", "x-4"]);
        assert_eq!(q.len(), 3);
        assert!(q.take_surplus("x").is_empty());
        assert!(q.take_surplus("y").is_empty(), "within its free slots");
        let started: Vec<String> = std::iter::from_fn(|| q.start_next(&l))
            .map(|(m, _)| m.id)
            .collect();
        assert_eq!(started, ["y-0", "x-1", "y-1"]);
        q.finished("x");
        q.finished("x");
        assert!(q.take_surplus("x").is_empty());
    }

    #[test]
    fn a_lost_lease_drops_only_that_queued_message_and_keeps_turns_consistent() {
        let mut q = queues(1, &[("x", 2), ("y", 1)]);
        let lost = |id: &str, endpoint: &str, token: &str| Lost {
            id: id.to_owned(),
            token: token.into(),
            endpoint_id: endpoint.to_owned(),
        };
        // A different token is another claim of the same message: not this one.
        assert_eq!(q.drop_lost(&[lost("x-0", "x", "newer")]), 0);
        assert_eq!(
            q.drop_lost(&[
                lost("x-1", "x", "token"),
                lost("y-0", "y", "token"),
                lost("z", "z", "token")
            ]),
            2
        );
        assert_eq!(q.len(), 1);
        let l = roomy();
        let started: Vec<String> = std::iter::from_fn(|| q.start_next(&l))
            .map(|(m, _)| m.id)
            .collect();
        assert_eq!(
            started,
            ["x-0"],
            "y has no turn left, x only its remaining message"
        );
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn draining_hands_back_everything_queued() {
        let l = roomy();
        let mut q = queues(1, &[("x", 3), ("y", 2)]);
        assert_eq!(q.start_next(&l).map(|(m, _)| m.id).as_deref(), Some("x-0"));
        assert_eq!(q.start_next(&l).map(|(m, _)| m.id).as_deref(), Some("y-0"));
        assert!(q.start_next(&l).is_none(), "both at their cap of 1");
        assert_eq!(q.drain().len(), 3);
        assert_eq!(q.len(), 0);
        q.finished("x");
        assert!(q.start_next(&l).is_none());
    }

    #[test]
    fn an_owner_at_its_cap_waits_while_other_owners_start() {
        let l = limiter(2, 100);
        let mut q = ReadyQueues::new(4);
        for i in 0..3 {
            q.extend(
                (0..3).map(|n| Claimed::for_test_of(&format!("t{i}-{n}"), &format!("t{i}"), "tarpit", "h")),
            );
        }
        q.extend((0..2).map(|n| Claimed::for_test_of(&format!("ok-{n}"), "ok", "fine", "h")));
        let mut slots = Vec::new();
        let started = start_all(&mut q, &l, &mut slots);
        // Two of the tarpit owner's (its cap, across its endpoints), then the other owner's, then nothing.
        assert_eq!(started, ["t0-0", "t1-0", "ok-0", "ok-1"]);
        assert_eq!(q.len(), 7, "the tarpit owner's others wait queued");
        slots.remove(0);
        q.finished("t0");
        assert_eq!(
            start_all(&mut q, &l, &mut slots),
            ["t0-1"],
            "a freed owner slot is taken again, one only"
        );
    }

    #[test]
    fn a_host_at_its_cap_waits_whoever_owns_the_endpoints() {
        let l = limiter(100, 1);
        let mut q = ReadyQueues::new(4);
        q.extend([
            Claimed::for_test_of("a-0", "a", "o1", "shared"),
            Claimed::for_test_of("b-0", "b", "o2", "shared"),
            Claimed::for_test_of("c-0", "c", "o3", "elsewhere"),
        ]);
        let mut slots = Vec::new();
        assert_eq!(start_all(&mut q, &l, &mut slots), ["a-0", "c-0"]);
        assert_eq!(q.len(), 1);
    }
}
