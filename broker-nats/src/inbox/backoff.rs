//! The inbox's pauses between retries: doubling from a first pause, capped, with jitter so that consumers
//! retrying after the same outage spread out; the one retry policy, [`annals::RetryPolicy`].

use std::time::Duration;

/// The pause before retry `n` (0 for the first): `first` doubled `n` times, at most `cap`, of which a random
/// part up to half is taken off (equal jitter: between half and all of it).
pub(crate) fn backoff(first: Duration, n: u32, cap: Duration) -> Duration {
    annals::RetryPolicy::new(first, cap, 0).pause(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_keeps_at_least_half() {
        let first = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        for n in 0..40 {
            let full = first.saturating_mul(1u32 << n.min(20)).min(cap);
            let pause = backoff(first, n, cap);
            assert!(
                pause >= full / 2 && pause <= full,
                "retry {n}: {pause:?} of {full:?}"
            );
        }
        assert!(backoff(first, 30, cap) >= cap / 2);
    }
}
