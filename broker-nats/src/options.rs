//! [`RelayOptions`]: where and how the relay publishes.

use std::time::Duration;

use crate::error::Result;
use crate::stream::FeedStream;
use crate::subject::Subjects;

/// The relay's configuration. The defaults suit a single service: projection name `nats_relay`, JetStream
/// stream `ANNALS` capturing `annals.>`, a two-minute duplicate window, 256 acknowledgements in flight.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    pub(crate) name: String,
    pub(crate) stream: String,
    pub(crate) subjects: Subjects,
    pub(crate) duplicate_window: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) ack_timeout: Duration,
    pub(crate) attempts: u32,
    pub(crate) batch_size: usize,
    pub(crate) lease_ttl: Duration,
    pub(crate) projections_schema: String,
    pub(crate) read_model_prefix: String,
    pub(crate) instance: String,
}

impl RelayOptions {
    /// The defaults, publishing under the subject prefix `prefix` into the JetStream stream `stream`.
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) when the prefix is not a valid subject prefix.
    pub fn new(prefix: &str, stream: &str) -> Result<Self> {
        Ok(Self {
            name: "nats_relay".into(),
            stream: stream.into(),
            subjects: Subjects::new(prefix)?,
            duplicate_window: Duration::from_secs(120),
            max_in_flight: 256,
            ack_timeout: Duration::from_secs(5),
            attempts: 5,
            batch_size: 10_000,
            lease_ttl: Duration::from_secs(10),
            projections_schema: "annals_projections".into(),
            read_model_prefix: "rm_".into(),
            instance: format!("pid-{}", std::process::id()),
        })
    }

    /// The relay's name among the projections (its checkpoint and lease key; `a-z 0-9 _`). Give each relay of
    /// one database its own name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How long JetStream remembers message ids (the stream's `duplicate_window`; default 2 minutes).
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// How many acknowledgements may be outstanding (default 256; at most one per Annals stream).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// How long to wait for one acknowledgement before its outcome counts as unknown (default 5 s).
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// How many times one message is sent within a batch before the batch fails (default 5; the runner then
    /// retries from the checkpoint with backoff).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Events read and published per checkpoint commit (default 10,000: every batch ends by waiting for its last
    /// acknowledgements and committing the checkpoint, so small batches leave the pipeline idle; measured in
    /// `docs/benchmarks.md`, `relay-nats`). When a batch fails, the events acknowledged before its first
    /// unacknowledged one are checkpointed and the rest is published again.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// The lease time-to-live of the relay's ownership (default 10 s; see `docs/projections.md`).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Where the checkpoint and lease live: the projections metadata schema and read-model prefix (defaults
    /// `annals_projections` and `rm_`, as [`Projections::postgres`](annals_projections::Projections::postgres)).
    pub fn projections_schema(
        mut self,
        schema: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        self.projections_schema = schema.into();
        self.read_model_prefix = prefix.into();
        self
    }

    /// A name for this process in logs (default `pid-<pid>`).
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = instance.into();
        self
    }

    /// The subjects the relay publishes to.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The JetStream stream the relay writes.
    pub fn feed_stream(&self) -> FeedStream {
        FeedStream {
            name: self.stream.clone(),
            subject: self.subjects.filter(),
            duplicate_window: self.duplicate_window,
        }
    }
}
