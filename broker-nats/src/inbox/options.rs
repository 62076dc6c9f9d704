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
            max_ack_pending: 1,
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

    /// Messages delivered but not yet acknowledged (default 1: strict per-stream order, even across
    /// redeliveries; raise it only if your handler tolerates reordering after a crash).
    pub fn max_ack_pending(mut self, n: i64) -> Self {
        self.max_ack_pending = n.max(1);
        self
    }

    /// How long inbox rows are kept (default 7 days). Must exceed the longest time after which the same event
    /// can arrive again: see `docs/event-feed.md`.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }
}
