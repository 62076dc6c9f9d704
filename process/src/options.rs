//! [`ProcessOptions`]: bounds and intervals of a process manager's handling and timer polling.

use std::time::Duration;

/// Bounds and intervals of one process manager. The defaults suit most services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessOptions {
    pub(crate) conflict_retries: u32,
    pub(crate) max_steps: u32,
    pub(crate) timer_poll: Duration,
    pub(crate) timer_batch: usize,
    pub(crate) timer_claim: Duration,
    pub(crate) timer_attempts: u32,
    pub(crate) timer_backoff: Duration,
    pub(crate) read_ahead: usize,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        Self {
            conflict_retries: 16,
            max_steps: 16,
            timer_poll: Duration::from_millis(500),
            timer_batch: 100,
            timer_claim: Duration::from_secs(30),
            timer_attempts: 10,
            timer_backoff: Duration::from_millis(200),
            read_ahead: 64,
        }
    }
}

impl ProcessOptions {
    /// The defaults: 16 conflict retries, 16 chained refusals, timers polled every 500 ms in batches of 100,
    /// claimed for 30 s, parked after 10 failed firings (backing off from 200 ms); up to 64 inputs of other
    /// instances handled ahead of the runner.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times an input is decided again when the instance's stream changed under it.
    pub fn conflict_retries(mut self, retries: u32) -> Self {
        self.conflict_retries = retries;
        self
    }

    /// The most decisions one input may chain through refusals (a refusal's decision issues a command that is
    /// refused, ...); past it the input fails (a decision loop is a bug).
    pub fn max_steps(mut self, steps: u32) -> Self {
        self.max_steps = steps.max(1);
        self
    }

    /// How often due timers are polled for when none is known to be due sooner (a timer set in this process
    /// wakes the poller at once).
    pub fn timer_poll(mut self, every: Duration) -> Self {
        self.timer_poll = every.max(Duration::from_millis(1));
        self
    }

    /// How long a poller owns a claimed timer: when it dies, another poller fires the timer after this.
    pub fn timer_claim(mut self, claim: Duration) -> Self {
        self.timer_claim = claim.max(Duration::from_millis(10));
        self
    }

    /// How many inputs of other instances may be handled ahead of the runner, concurrently (default 64; 0
    /// handles one input at a time). Inputs of one instance are always handled in order.
    pub fn read_ahead(mut self, inputs: usize) -> Self {
        self.read_ahead = inputs;
        self
    }

    /// How many failed firings park a timer (it stays stored, and `status` counts it as parked).
    pub fn timer_attempts(mut self, attempts: u32) -> Self {
        self.timer_attempts = attempts.max(1);
        self
    }

    /// The pause before a timer that failed `attempts` times is claimable again: `timer_backoff` doubled
    /// `attempts` times, at most a minute, jittered by the one retry policy (between half and all of it).
    pub(crate) fn timer_retry_in(&self, attempts: u32) -> Duration {
        annals::RetryPolicy::new(self.timer_backoff, Duration::from_secs(60), 0).pause(attempts)
    }
}
