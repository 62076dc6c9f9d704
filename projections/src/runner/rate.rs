//! [`Rate`]: the throughput a runner records with its state.

use std::time::{Duration, Instant};

/// Events per second over windows of about a second.
pub(super) struct Rate {
    since: Instant,
    events: usize,
    last: Option<f64>,
}

impl Rate {
    pub(super) fn new() -> Self {
        Self {
            since: Instant::now(),
            events: 0,
            last: None,
        }
    }

    pub(super) fn add(&mut self, events: usize) {
        self.events += events;
        let elapsed = self.since.elapsed();
        if elapsed >= Duration::from_secs(1) {
            self.last = Some(self.events as f64 / elapsed.as_secs_f64());
            self.since = Instant::now();
            self.events = 0;
        }
    }

    pub(super) fn get(&self) -> Option<f64> {
        self.last
    }
}
