//! Reading the global stream ahead of a runner that is catching up or rebuilding.

use std::sync::Arc;

use annals::{EventStore, Position, RecordedEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Pages of the global stream read on a task of their own, so that while the runner applies one page the next
/// ones are already being read and decoded: the database streams as it would for one long query, and on a
/// multi-threaded runtime decoding runs on another core. At most `depth` pages wait in memory (plus the one
/// being read), so a rebuild never holds more than a few pages of the log.
///
/// The reader stops after the first empty page (the head) or the first error; both are handed to the runner in
/// order. Dropping a `ReadAhead` stops its task.
pub(crate) struct ReadAhead {
    after: Position,
    pages: mpsc::Receiver<annals::Result<Vec<RecordedEvent>>>,
    task: JoinHandle<()>,
}

impl ReadAhead {
    /// Starts reading pages of `page` events after `after`.
    pub(crate) fn start(
        store: Arc<dyn EventStore>,
        after: Position,
        page: usize,
        depth: usize,
    ) -> Self {
        let (sender, pages) = mpsc::channel(depth.max(1));
        let task = tokio::spawn(async move {
            let mut from = after;
            loop {
                let read = store.read_all(from, page).await;
                let more = match &read {
                    Ok(events) => match events.last() {
                        Some(last) => {
                            from = last.position;
                            true
                        }
                        None => false,
                    },
                    Err(_) => false,
                };
                if sender.send(read).await.is_err() || !more {
                    return;
                }
            }
        });
        Self { after, pages, task }
    }

    /// The position the next page starts after: the last position handed out so far.
    pub(crate) fn after(&self) -> Position {
        self.after
    }

    /// The next page; an empty page means the reader reached the head and stopped.
    ///
    /// # Errors
    /// The store's error reading the page (the reader has then stopped), or [`annals::Error::Backend`] when the
    /// reading task ended without a page (it panicked).
    pub(crate) async fn next(&mut self) -> annals::Result<Vec<RecordedEvent>> {
        match self.pages.recv().await {
            Some(Ok(events)) => {
                if let Some(last) = events.last() {
                    self.after = last.position;
                }
                Ok(events)
            }
            Some(Err(e)) => Err(e),
            None => Err(annals::Error::Backend {
                operation: "read_all",
                source: format!(
                    "the task reading ahead after position {} stopped without a page",
                    self.after
                )
                .into(),
            }),
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}
