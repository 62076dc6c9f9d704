//! Per-projection options: batch size and failure policy.

use std::time::Duration;

/// What the runner does when a projection fails to apply an event.
///
/// ```
/// use std::time::Duration;
/// use annals_projections::FailurePolicy;
///
/// let stop = FailurePolicy::stop(); // the default
/// let park = FailurePolicy::park();
/// let retry = FailurePolicy::retry(5, Duration::from_millis(100)); // then stop
/// let retry_then_park = FailurePolicy::retry(5, Duration::from_millis(100)).then_park();
/// # let _ = (stop, park, retry, retry_then_park);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailurePolicy {
    pub(crate) retries: u32,
    pub(crate) backoff: Duration,
    pub(crate) park: bool,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        Self::stop()
    }
}

impl FailurePolicy {
    /// Stop the projection at the failing event (the default). Its status shows the error; the error names the
    /// projection, position, stream, event type and cause.
    pub const fn stop() -> Self {
        Self {
            retries: 0,
            backoff: Duration::ZERO,
            park: false,
        }
    }

    /// Park the failing event in the dead-letter list and continue with the next one.
    pub const fn park() -> Self {
        Self {
            retries: 0,
            backoff: Duration::ZERO,
            park: true,
        }
    }

    /// Retry the failing event up to `retries` more times, waiting `backoff`, then twice as long each time (at
    /// most 30 s); then stop (or park, with [`then_park`](Self::then_park)).
    pub const fn retry(retries: u32, backoff: Duration) -> Self {
        Self {
            retries,
            backoff,
            park: false,
        }
    }

    /// After the retries are exhausted, park the event instead of stopping.
    pub const fn then_park(mut self) -> Self {
        self.park = true;
        self
    }

    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
        self.backoff
            .saturating_mul(factor)
            .min(Duration::from_secs(30))
    }
}

/// Options of one registered projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectionOptions {
    pub(crate) batch_size: usize,
    pub(crate) failure_policy: FailurePolicy,
    pub(crate) read_ahead: usize,
    /// Why replaying the projection from the first event is refused (`rebuild`, `reset`): it has effects
    /// outside its read model (commands sent, messages published) that a replay would repeat.
    pub(crate) side_effects: Option<&'static str>,
}

/// Events per page a catching-up or rebuilding runner reads ahead by default.
pub const DEFAULT_READ_AHEAD: usize = 5_000;

impl Default for ProjectionOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            failure_policy: FailurePolicy::stop(),
            read_ahead: DEFAULT_READ_AHEAD,
            side_effects: None,
        }
    }
}

impl ProjectionOptions {
    /// Batch size 500, failure policy stop, read-ahead in pages of [`DEFAULT_READ_AHEAD`] events.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many events are read and applied per transaction (at least 1; 0 is treated as 1).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// What to do when the projection fails to apply an event.
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }

    /// How many events per page the runner reads ahead, on a task of its own, while it catches up or rebuilds
    /// (at most two pages wait in memory; pages smaller than the batch size are read at the batch size). `0`
    /// turns reading ahead off: each batch is then read when the one before it has been applied.
    pub fn read_ahead(mut self, events_per_page: usize) -> Self {
        self.read_ahead = events_per_page;
        self
    }

    /// Declares that handling an event has effects outside the read model (it sends commands, publishes
    /// messages), so that replaying the log would repeat them: [`rebuild`](crate::Projections::rebuild) and
    /// [`reset`](crate::Projections::reset) refuse it with [`Error::HasSideEffects`](crate::Error::HasSideEffects)
    /// quoting `why`. Process managers register this way.
    pub fn with_side_effects(mut self, why: &'static str) -> Self {
        self.side_effects = Some(why);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = FailurePolicy::retry(5, Duration::from_millis(100));
        assert_eq!(p.delay(0), Duration::from_millis(100));
        assert_eq!(p.delay(1), Duration::from_millis(200));
        assert_eq!(p.delay(3), Duration::from_millis(800));
        assert_eq!(p.delay(40), Duration::from_secs(30));
        assert!(!p.park && p.then_park().park);
        assert_eq!(FailurePolicy::default(), FailurePolicy::stop());
        assert_eq!(ProjectionOptions::new().batch_size(0).batch_size, 1);
        assert_eq!(ProjectionOptions::new().read_ahead, DEFAULT_READ_AHEAD);
        assert_eq!(ProjectionOptions::new().read_ahead(0).read_ahead, 0);
    }
}
