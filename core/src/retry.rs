//! [`RetryPolicy`]: the one backoff of every retry loop in Annals (ADR 0009). Each crate classifies its own
//! errors (transient or permanent); how long to wait between tries, how the waits grow, where they stop growing,
//! how they are spread, and how many tries there are, are this type's, built on `backon`'s exponential backoff.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder, Retryable};

/// Exponential backoff with equal jitter and a cap: the pause before retry `n` (0 for the first) is a random
/// duration between half and all of `first · 2ⁿ`, and never more than `cap`. A policy made by
/// [`new`](Self::new) allows a bounded number of retries; one made by [`forever`](Self::forever) never runs out
/// (only supervisors, which restart a runner that stopped, use it: their delay is still capped).
///
/// ```
/// use std::time::Duration;
/// use annals::RetryPolicy;
///
/// let policy = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(2), 5);
/// let pauses: Vec<Duration> = policy.pauses().collect();
/// assert_eq!(pauses.len(), 5);
/// assert!(pauses[0] >= Duration::from_millis(50) && pauses[0] <= Duration::from_millis(100));
/// assert!(pauses.iter().all(|p| *p <= Duration::from_secs(2)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    first: Duration,
    cap: Duration,
    retries: Option<u32>,
}

/// After this many doublings every pause is at its cap (2⁶⁴ times any non-zero first pause overflows).
const DOUBLINGS: u32 = 64;

impl RetryPolicy {
    /// At most `retries` retries, the first after up to `first`, each pause up to twice the one before and at
    /// most `cap`.
    pub const fn new(first: Duration, cap: Duration, retries: u32) -> Self {
        Self {
            first,
            cap,
            retries: Some(retries),
        }
    }

    /// Retries without end, pausing as [`new`](Self::new) does. Only for supervisors, which restart a runner
    /// after any transient failure; every retry loop of an operation is bounded.
    pub const fn forever(first: Duration, cap: Duration) -> Self {
        Self {
            first,
            cap,
            retries: None,
        }
    }

    /// The same pauses with at most `retries` retries.
    pub const fn with_retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// How many retries it allows (`None`: without end).
    pub const fn retries(&self) -> Option<u32> {
        self.retries
    }

    /// The longest pause before the first retry.
    pub const fn first(&self) -> Duration {
        self.first
    }

    /// The longest pause of all.
    pub const fn cap(&self) -> Duration {
        self.cap
    }

    fn builder(&self) -> ExponentialBuilder {
        // backon's jitter adds up to the base again: a base of half the pause gives half to all of it.
        let builder = ExponentialBuilder::new()
            .with_factor(2.0)
            .with_min_delay(half(self.first.min(self.cap)))
            .with_max_delay(half(self.cap))
            .with_jitter();
        match self.retries {
            Some(retries) => builder.with_max_times(retries as usize),
            None => builder.without_max_times(),
        }
    }

    /// The pauses before each retry, in order, fresh jitter each; ends after [`retries`](Self::retries).
    pub fn pauses(&self) -> Pauses {
        Pauses {
            backoff: self.builder().build(),
            policy: *self,
            n: 0,
        }
    }

    /// The longest pause before retry `n`: `first · 2ⁿ`, at most `cap`.
    fn full(&self, n: u32) -> Duration {
        self.first.saturating_mul(1u32 << n.min(31)).min(self.cap)
    }

    /// The pause before retry `n` (0 for the first), for loops that count their own tries (a message resent
    /// after its `n`-th failure among others); a fresh draw each call.
    pub fn pause(&self, n: u32) -> Duration {
        self.with_retries(DOUBLINGS + 1)
            .pauses()
            .nth(n.min(DOUBLINGS) as usize)
            .unwrap_or(self.cap)
    }

    /// Runs `operation` until it succeeds, fails with an error `transient` says is permanent, or the retries
    /// ran out (then the last error is returned); pausing between tries. `on_retry` sees each transient error
    /// and the pause before the next try (to log it).
    ///
    /// # Errors
    /// The last error of `operation`.
    pub async fn retry<T, E, F, Fut>(
        &self,
        operation: F,
        transient: impl FnMut(&E) -> bool,
        mut on_retry: impl FnMut(&E, Duration),
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        operation
            .retry(self.builder())
            .sleep(tokio::time::sleep)
            .when(transient)
            .notify(|error: &E, pause: Duration| on_retry(error, pause))
            .await
    }
}

fn half(d: Duration) -> Duration {
    d / 2
}

/// The pauses of a [`RetryPolicy`], in order ([`RetryPolicy::pauses`]).
#[derive(Debug)]
pub struct Pauses {
    backoff: ExponentialBackoff,
    policy: RetryPolicy,
    n: u32,
}

impl Iterator for Pauses {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let drawn = self.backoff.next()?;
        let full = self.policy.full(self.n);
        self.n = self.n.saturating_add(1);
        // backon computes in `f32`: keep its draw within the exact bounds the policy promises.
        Some(drawn.clamp(full / 2, full))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_millis(10);
    const CAP: Duration = Duration::from_millis(300);

    /// The full pause before retry `n`: `FIRST · 2ⁿ`, at most `CAP`.
    fn full(n: u32) -> Duration {
        FIRST.saturating_mul(1 << n.min(20)).min(CAP)
    }

    #[test]
    fn pauses_are_bounded_in_number_capped_and_jittered_within_half_to_all() {
        let policy = RetryPolicy::new(FIRST, CAP, 12);
        for _ in 0..200 {
            let pauses: Vec<_> = policy.pauses().collect();
            assert_eq!(pauses.len(), 12, "bounded: exactly the retries allowed");
            for (n, pause) in (0..).zip(&pauses) {
                assert!(
                    *pause >= full(n) / 2 && *pause <= full(n),
                    "retry {n}: {pause:?} not within half to all of {:?}",
                    full(n)
                );
            }
        }
        // Jittered: many draws of one pause are not all the same.
        let draws: std::collections::HashSet<_> = (0..50).map(|_| policy.pause(3)).collect();
        assert!(draws.len() > 1, "{draws:?}");
        for n in [0, 1, 5, 40, u32::MAX] {
            let pause = policy.pause(n);
            assert!(pause >= full(n) / 2 && pause <= full(n), "{n}: {pause:?}");
        }
        assert_eq!(RetryPolicy::new(FIRST, CAP, 0).pauses().count(), 0);
    }

    #[test]
    fn a_first_pause_above_the_cap_is_capped_and_forever_never_runs_out() {
        let policy = RetryPolicy::new(Duration::from_secs(10), CAP, 3);
        assert!(policy.pauses().all(|p| p <= CAP && p >= CAP / 2));
        let forever = RetryPolicy::forever(FIRST, CAP);
        assert_eq!(forever.retries(), None);
        assert!(forever.pauses().take(10_000).all(|p| p <= CAP));
        assert_eq!(forever.pauses().take(10_000).count(), 10_000);
    }

    #[tokio::test]
    async fn retry_stops_at_a_permanent_error_or_after_the_retries() {
        let policy = RetryPolicy::new(FIRST, CAP, 3);
        let mut tries = 0;
        let mut retried = 0;
        let outcome: Result<(), &str> = policy
            .retry(
                || {
                    tries += 1;
                    async { Err("transient") }
                },
                |e| *e == "transient",
                |_, _| retried += 1,
            )
            .await;
        assert_eq!((outcome, tries, retried), (Err("transient"), 4, 3));
        let mut tries = 0;
        let outcome: Result<(), &str> = policy
            .retry(
                || {
                    tries += 1;
                    async { Err("permanent") }
                },
                |e| *e == "transient",
                |_, _| {},
            )
            .await;
        assert_eq!((outcome, tries), (Err("permanent"), 1));
    }
}
