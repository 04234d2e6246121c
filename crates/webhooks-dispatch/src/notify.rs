//! Debounced wake-ups for workers.
//!
//! A dispatch sends `NOTIFY` so a listening worker claims the new message at once instead of at its next poll.
//! One NOTIFY per row would serialize commits on PostgreSQL's notification queue in a hot path, so each
//! process sends at most one per interval; a worker that wakes also claims once more one interval later,
//! catching any message enqueued inside a window whose NOTIFY was skipped.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) struct Debounce {
    interval: Duration,
    // A std mutex: held for a comparison, never across an await.
    last: Mutex<Option<Instant>>,
}

impl Debounce {
    pub(crate) fn new(interval: Duration) -> Self {
        Debounce {
            interval,
            last: Mutex::new(None),
        }
    }

    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// True at most once per interval (the first caller in each window wins).
    pub(crate) fn fire(&self) -> bool {
        let now = Instant::now();
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *last {
            Some(at) if now.duration_since(at) < self.interval => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_per_interval() {
        let d = Debounce::new(Duration::from_millis(50));
        assert!(d.fire());
        assert!(!d.fire());
        assert!(!d.fire());
        std::thread::sleep(Duration::from_millis(60));
        assert!(d.fire());
    }
}
