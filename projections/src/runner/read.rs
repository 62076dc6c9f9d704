//! The next page of events for a runner: from the read-ahead while it is at the runner's checkpoint, else read
//! directly (a full page starts a read-ahead after it).

use std::sync::Arc;

use annals::RecordedEvent;

use super::{Engine, Registered};
use crate::backend::Slot;
use crate::read_ahead::ReadAhead;

/// Pages a catching-up or rebuilding runner reads ahead of the batch it applies.
const READ_AHEAD_PAGES: usize = 2;

impl Engine {
    /// The batch after `slot.checkpoint`: from the read-ahead when it is at that position, else read directly.
    /// A full batch read directly starts a read-ahead after it; a short batch or an error from the read-ahead
    /// ends it (the next call reads directly again).
    pub(super) async fn next_page(
        &self,
        p: &Registered,
        slot: &Slot,
        ahead: &mut Option<ReadAhead>,
    ) -> annals::Result<Vec<RecordedEvent>> {
        let batch = p.options.batch_size;
        if let Some(reader) = ahead.as_mut().filter(|r| r.after() == slot.checkpoint) {
            let events = reader.next(batch).await;
            if !matches!(&events, Ok(events) if events.len() >= batch) {
                *ahead = None;
            }
            return events;
        }
        let events = self.store.read_all(slot.checkpoint, batch).await?;
        *ahead = match events.last() {
            Some(last) if events.len() >= batch && p.options.read_ahead > 0 => {
                Some(ReadAhead::start(
                    Arc::clone(&self.store),
                    last.position,
                    batch.max(p.options.read_ahead),
                    READ_AHEAD_PAGES,
                ))
            }
            _ => None,
        };
        Ok(events)
    }
}
