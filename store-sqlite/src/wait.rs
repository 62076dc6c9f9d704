//! Waiting for new events: this process's appends wake waiters at once (a `watch` channel of a generation
//! counter); appends by other processes on the same file are seen by reading the head again every poll
//! interval, a cheap lookup of the largest position.
//!
//! A waiter subscribes to the counter *before* reading the head, so a bump between the two is not lost.

use annals::Position;
use tokio::time::{Duration, Instant};

use crate::store::{Inner, SqliteStore};

/// Bumps the store's generation when dropped: held across a write's commit, so waiters look again whatever the
/// outcome (committed, failed, or unknown because the future was dropped).
pub(crate) struct Wake<'a>(&'a Inner);

impl Drop for Wake<'_> {
    fn drop(&mut self) {
        self.0.generation.send_modify(|g| *g = g.wrapping_add(1));
    }
}

impl SqliteStore {
    /// A [`Wake`] for this store.
    pub(crate) fn wake_on_drop(&self) -> Wake<'_> {
        Wake(&self.inner)
    }

    /// Waits until the head is past `after` or `timeout` has passed; returns the head then.
    pub(crate) async fn wait_until_past(
        &self,
        after: Position,
        timeout: Duration,
    ) -> annals::Result<Position> {
        let deadline = Instant::now().checked_add(timeout);
        let mut generation = self.inner.generation.subscribe();
        loop {
            generation.borrow_and_update();
            let head = self.head_position().await?;
            if head > after {
                return Ok(head);
            }
            let now = Instant::now();
            let poll = self.inner.settings.poll_interval;
            let pause = match deadline {
                Some(deadline) if deadline <= now => return Ok(head),
                Some(deadline) => poll.min(deadline - now),
                None => poll,
            };
            // A timeout is the poll for other processes' appends; the sender lives as long as `self`.
            let _ = tokio::time::timeout(pause, generation.changed()).await;
        }
    }
}
