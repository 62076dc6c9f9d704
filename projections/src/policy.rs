//! Per-projection options: batch size and failure policy.

use std::time::Duration;

use annals::RetryPolicy;

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
    /// The retries of a failing event and the pauses between them.
    pub(crate) retry: RetryPolicy,
    pub(crate) park: bool,
}

/// The longest pause between retries of a failing event.
const MAX_EVENT_PAUSE: Duration = Duration::from_secs(30);

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
            retry: RetryPolicy::new(Duration::ZERO, MAX_EVENT_PAUSE, 0),
            park: false,
        }
    }

    /// Park the failing event in the dead-letter list and continue with the next one.
    pub const fn park() -> Self {
        Self {
            retry: RetryPolicy::new(Duration::ZERO, MAX_EVENT_PAUSE, 0),
            park: true,
        }
    }

    /// Retry the failing event up to `retries` more times, waiting up to `backoff`, then up to twice as long each
    /// time (at most 30 s; each pause between half and all of that, by the one [`RetryPolicy`]); then stop (or
    /// park, with [`then_park`](Self::then_park)).
    pub const fn retry(retries: u32, backoff: Duration) -> Self {
        Self {
            retry: RetryPolicy::new(backoff, MAX_EVENT_PAUSE, retries),
            park: false,
        }
    }

    /// After the retries are exhausted, park the event instead of stopping.
    pub const fn then_park(mut self) -> Self {
        self.park = true;
        self
    }

    /// The pauses before each retry of a failing event; as many as the retries.
    pub(crate) fn pauses(&self) -> annals::Pauses {
        self.retry.pauses()
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
        let pauses: Vec<_> = p.pauses().collect();
        assert_eq!(pauses.len(), 5);
        assert!(pauses[0] >= Duration::from_millis(50) && pauses[0] <= Duration::from_millis(100));
        assert!(pauses[3] >= Duration::from_millis(400) && pauses[3] <= Duration::from_millis(800));
        let long = FailurePolicy::retry(40, Duration::from_millis(100));
        assert!(long.pauses().all(|pause| pause <= Duration::from_secs(30)));
        assert_eq!(FailurePolicy::stop().pauses().count(), 0);
        assert!(!p.park && p.then_park().park);
        assert_eq!(FailurePolicy::default(), FailurePolicy::stop());
        assert_eq!(ProjectionOptions::new().batch_size(0).batch_size, 1);
        assert_eq!(ProjectionOptions::new().read_ahead, DEFAULT_READ_AHEAD);
        assert_eq!(ProjectionOptions::new().read_ahead(0).read_ahead, 0);
    }
}
