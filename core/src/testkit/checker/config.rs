//! How long a checker run lasts, with which seed and how many actors: [`Config`], from the environment.

use std::time::Duration;

/// The variable that replays a seed: `ANNALS_CHECK_SEED=<N>`.
pub const SEED_VARIABLE: &str = "ANNALS_CHECK_SEED";

/// The variable that sets a run's length in seconds: `ANNALS_CHECK_SECS=<N>`.
pub const SECS_VARIABLE: &str = "ANNALS_CHECK_SECS";

/// A run's length when [`SECS_VARIABLE`] is not set.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(20);

/// What a checker run does: which seed drives the clients' choices, how long they run, how many there are and
/// how many streams they share.
#[derive(Debug, Clone)]
pub struct Config {
    /// The seed: each client's choices come from a generator seeded with it and the client's index.
    pub seed: u64,
    /// How long the clients issue operations.
    pub duration: Duration,
    /// Concurrent clients (tokio tasks), each with its own write cache, as separate processes would have.
    pub clients: usize,
    /// Streams the clients share: few, so that they contend.
    pub streams: usize,
    /// Live followers of the global order.
    pub followers: usize,
    /// The name of the test that runs this configuration, printed with the seed and in the replay command.
    pub label: String,
}

/// Why the environment does not give a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A variable is set but is not a whole number. Fix or unset it.
    #[error("{variable} must be a whole number, got {value:?}")]
    NotANumber {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
    },
}

impl Config {
    /// A run of [`DEFAULT_DURATION`] with a freshly drawn seed, 8 clients, 4 streams and 2 followers.
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            seed: fresh_seed(),
            duration: DEFAULT_DURATION,
            clients: 8,
            streams: 4,
            followers: 2,
            label: label.into(),
        }
    }

    /// As [`new`](Config::new), with the seed from [`SEED_VARIABLE`] and the length from [`SECS_VARIABLE`] when
    /// they are set.
    ///
    /// # Errors
    /// [`ConfigError::NotANumber`] when a variable is set to something else than a whole number.
    pub fn from_env(label: impl Into<String>) -> Result<Self, ConfigError> {
        let mut config = Self::new(label);
        if let Some(seed) = number(SEED_VARIABLE)? {
            config.seed = seed;
        }
        if let Some(secs) = number(SECS_VARIABLE)? {
            config.duration = Duration::from_secs(secs);
        }
        Ok(config)
    }

    /// The same configuration with another seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The same configuration with another length.
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// How to run this configuration again with the same seed.
    pub fn replay_hint(&self) -> String {
        format!(
            "replay: {SEED_VARIABLE}={} {SECS_VARIABLE}={} cargo test {}",
            self.seed,
            self.duration.as_secs().max(1),
            self.label
        )
    }
}

fn number(variable: &'static str) -> Result<Option<u64>, ConfigError> {
    match std::env::var(variable) {
        Ok(value) if value.trim().is_empty() => Ok(None),
        Ok(value) => value
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::NotANumber { variable, value }),
        Err(_) => Ok(None),
    }
}

/// A seed nobody chose: the process's random hasher keys mixed with the time.
fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    // Seeds stay below 2^53 so that they survive a trip through tools that read numbers as doubles.
    RandomState::new().hash_one(now) >> 11
}
