//! Live followers of the global order: one reads `read_all` pages, one visits with `visit_all`, both woken by
//! `wait_for_events`. Each must see every event once, in position order, nothing skipped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::{EventId, EventStore, Position, RecordedEvent};

/// How a follower reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `read_all` pages of [`PAGE`] events.
    Pages,
    /// `visit_all` from the last position seen.
    Visits,
}

/// Events per `read_all` page of a follower.
const PAGE: usize = 100;

/// Failed reads in a row after which a follower gives up.
const MAX_FAILURES: u32 = 40;

/// What a follower saw.
#[derive(Debug)]
pub(crate) struct Follower {
    pub(crate) mode: Mode,
    /// The events seen, in the order handed over.
    pub(crate) seen: Vec<(Position, EventId)>,
    last: Position,
    /// What went wrong while following (a position handed over twice or out of order, a read that kept failing).
    pub(crate) problems: Vec<String>,
}

impl Follower {
    fn new(mode: Mode) -> Self {
        Self {
            mode,
            seen: Vec::new(),
            last: Position::START,
            problems: Vec::new(),
        }
    }

    /// Reads what follows the last position seen, once.
    async fn read_once(&mut self, store: &dyn EventStore) -> crate::Result<()> {
        let Self {
            mode,
            seen,
            last,
            problems,
        } = self;
        let after = *last;
        let mut take = |event: &RecordedEvent| -> crate::Result<()> {
            if event.position <= *last {
                problems.push(format!(
                    "{mode:?}: handed position {} after position {}",
                    event.position, last
                ));
            }
            seen.push((event.position, event.event_id));
            *last = (*last).max(event.position);
            Ok(())
        };
        match mode {
            Mode::Pages => {
                for event in &store.read_all(after, PAGE).await? {
                    take(event)?;
                }
            }
            Mode::Visits => {
                store.visit_all(after, &mut take).await?;
            }
        }
        Ok(())
    }

    /// Reads until the last position seen is at least `head` (bounded by failed reads in a row).
    pub(crate) async fn catch_up(&mut self, store: &dyn EventStore, head: Position) {
        let mut failures = 0;
        while self.last < head {
            let before = self.last;
            match self.read_once(store).await {
                Ok(()) if self.last == before => {
                    self.problems.push(format!(
                        "{:?}: stuck at position {before} below the head {head}",
                        self.mode
                    ));
                    return;
                }
                Ok(()) => failures = 0,
                Err(error) => {
                    failures += 1;
                    if failures > MAX_FAILURES {
                        self.problems.push(format!(
                            "{:?}: catching up kept failing: {error}",
                            self.mode
                        ));
                        return;
                    }
                    tokio::time::sleep(backoff(failures)).await;
                }
            }
        }
    }
}

/// Follows the global order until `stop`; returns what it saw.
pub(crate) async fn follow(
    store: Arc<dyn EventStore>,
    mode: Mode,
    stop: Arc<AtomicBool>,
) -> Follower {
    let mut follower = Follower::new(mode);
    let mut failures = 0;
    while !stop.load(Ordering::SeqCst) {
        let woke = store
            .wait_for_events(follower.last, Duration::from_millis(100))
            .await;
        let read = match woke {
            Ok(head) if head > follower.last => follower.read_once(&*store).await,
            Ok(_) => Ok(()),
            Err(error) => Err(error),
        };
        match read {
            Ok(()) => failures = 0,
            Err(error) => {
                failures += 1;
                if failures > MAX_FAILURES {
                    follower
                        .problems
                        .push(format!("{mode:?}: reading kept failing: {error}"));
                    break;
                }
                tokio::time::sleep(backoff(failures)).await;
            }
        }
    }
    follower
}

/// The pause after `failures` failed reads in a row: up to 10 ms, doubling, at most half a second.
fn backoff(failures: u32) -> Duration {
    const PAUSES: crate::RetryPolicy =
        crate::RetryPolicy::new(Duration::from_millis(10), Duration::from_millis(500), 0);
    PAUSES.pause(failures.saturating_sub(1))
}
