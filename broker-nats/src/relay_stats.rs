//! [`Stats`]: the relay's counters, a document in its read model committed with each checkpoint.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::publisher::Published;

/// The collection of the relay's read model that holds its counters.
pub const STATS_COLLECTION: &str = "relay";

/// The key of the counters' document.
pub(crate) const STATS_KEY: &str = "stats";

/// What the relay has published, as committed with its checkpoint (only the lease holder writes it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Stats {
    /// Pages checkpointed.
    pub(crate) batches: u64,
    /// Events acknowledged by the broker.
    pub(crate) events: u64,
    /// Of those, duplicates the broker dropped.
    pub(crate) duplicates: u64,
    /// Messages sent again.
    pub(crate) resent: u64,
    /// The last checkpoint committed.
    pub(crate) last_position: u64,
    /// When it was committed.
    pub(crate) last_batch_at: Option<DateTime<Utc>>,
}

impl Stats {
    /// Counts a page whose publishing did `published`.
    pub(crate) fn add(&mut self, published: &Published) {
        self.events += published.events as u64;
        self.duplicates += published.duplicates as u64;
        self.resent += published.resent as u64;
    }

    /// Counts a committed page ending at `position`; the document to commit with it.
    pub(crate) fn checkpointed(&mut self, position: u64) -> (String, String, serde_json::Value) {
        self.batches += 1;
        self.last_position = position;
        self.last_batch_at = Some(Utc::now());
        (
            STATS_COLLECTION.to_owned(),
            STATS_KEY.to_owned(),
            serde_json::to_value(&*self).unwrap_or(serde_json::Value::Null),
        )
    }
}
