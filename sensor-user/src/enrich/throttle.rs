//! At most one reload per interval: a storm of cache misses (unknown uids,
//! new cgroups) costs one re-read, not one per event.

use std::time::{Duration, Instant};

pub struct Throttle {
    last: Option<Instant>,
    every: Duration,
}

impl Throttle {
    #[must_use]
    pub const fn new(every: Duration) -> Self {
        Self { last: None, every }
    }

    /// True (and restarts the interval) when a reload is allowed now.
    pub fn ready(&mut self) -> bool {
        if self.last.is_some_and(|t| t.elapsed() < self.every) {
            return false;
        }
        self.last = Some(Instant::now());
        true
    }
}
