//! The checker's seeded random numbers: SplitMix64, written out here so that a seed replays the same choices
//! whatever version of a random-number crate the workspace uses (a seed that found a defect stays a regression
//! case).

/// A SplitMix64 generator: small, fast, and its output for a seed is fixed forever.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// The generator of one actor of a run: the same `(seed, actor)` always gives the same numbers.
    pub(crate) fn new(seed: u64, actor: u64) -> Self {
        let mut rng = Self(seed ^ actor.wrapping_mul(0xD1B5_4A32_D192_ED03));
        rng.next_u64();
        rng
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.next_u64() % n
    }

    /// A number in `low..=high`.
    pub(crate) fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high.saturating_sub(low) + 1)
    }

    /// `true` with a probability of `percent` in a hundred.
    pub(crate) fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn a_seed_replays_the_same_numbers() {
        let (mut a, mut b) = (Rng::new(42, 3), Rng::new(42, 3));
        let first: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let again: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(first, again);
        assert_ne!(
            first,
            (0..8)
                .map(|_| Rng::new(42, 4).next_u64())
                .collect::<Vec<_>>()
        );
        assert!((0..1000).all(|_| a.between(2, 5) >= 2 && a.between(2, 5) <= 5));
    }
}
