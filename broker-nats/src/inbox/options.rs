//! [`InboxOptions`]: the inbox's configuration.

use std::time::Duration;

/// The inbox's configuration.
#[derive(Debug, Clone)]
pub struct InboxOptions {
    pub(crate) schema: String,
    pub(crate) filter: Option<String>,
    pub(crate) attempts: u32,
    pub(crate) backoff: Duration,
    pub(crate) ack_wait: Duration,
    pub(crate) max_ack_pending: i64,
    pub(crate) batch_size: usize,
    pub(crate) order_wait: Option<Duration>,
    pub(crate) retention: Duration,
}

impl Default for InboxOptions {
    fn default() -> Self {
        Self {
            schema: "annals_inbox".into(),
            filter: None,
            attempts: 5,
            backoff: Duration::from_millis(100),
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 512,
            batch_size: 256,
            order_wait: None,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl InboxOptions {
    /// The PostgreSQL schema of the inbox tables (`inbox`, `inbox_parked`; default `annals_inbox`).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Only subjects matching `filter` (for example [`Subjects::category_filter`](crate::Subjects)).
    pub fn filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }

    /// How many times the handler may fail with an error of its own for one event before the message is parked
    /// (default 5, at least 1). Transient database errors do not count: they are retried for as long as they
    /// last.
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// The first wait between handler attempts (default 100 ms; doubling, at most 30 s, with jitter).
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long the broker waits for an acknowledgement before redelivering (default 30 s).
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// Messages delivered but not yet acknowledged, across every instance of the consumer (default 512: the
    /// batch being applied, the next one arriving, and the previous one's acknowledgements in flight). Set when
    /// the durable consumer is created; an existing consumer keeps its value. Per-stream order does not depend
    /// on it: the inbox's order fence keeps each stream's events in order whatever the broker redelivers.
    pub fn max_ack_pending(mut self, n: i64) -> Self {
        self.max_ack_pending = n.max(1);
        self
    }

    /// The most messages applied in one transaction (default 256). A batch is what has arrived when the inbox
    /// is ready: one message when the feed is quiet (no waiting to fill a batch), up to this many when it is
    /// behind. 1 gives one transaction per message.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// How long a message whose stream has a gap before it (an earlier event not yet applied: held by an
    /// instance that died, parked unreadable, or removed from the JetStream stream) is held back before it is
    /// applied anyway (default twice `ack_wait`, so a message held by a dead instance is redelivered first).
    pub fn order_wait(mut self, wait: Duration) -> Self {
        self.order_wait = Some(wait);
        self
    }

    /// The order fence's wait: [`order_wait`](Self::order_wait), by default twice `ack_wait`.
    pub(crate) fn gap_wait(&self) -> Duration {
        self.order_wait.unwrap_or(self.ack_wait.saturating_mul(2))
    }

    /// How long inbox rows are kept (default 7 days). Must exceed the longest time after which the same event
    /// can arrive again: see `docs/event-feed.md`.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }
}
