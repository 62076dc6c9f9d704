//! Reading the global stream ahead of a runner that is catching up or rebuilding.

use std::sync::Arc;

use annals::{EventStore, Position, RecordedEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Pages of the global stream read on a task of their own, so that while the runner applies one batch the next
/// events are already being read and decoded: the database streams as it would for one long query, and on a
/// multi-threaded runtime decoding runs on another core.
///
/// Pages are larger than the runner's batches (fewer round trips); [`ReadAhead::next`] cuts them back into
/// batches. At most `depth` pages wait in memory (plus the one being read), so a rebuild never holds more than a
/// few pages of the log.
///
/// The reader stops after the first empty page (the head) or the first error; both reach the runner in order.
/// Dropping a `ReadAhead` stops its task.
pub(crate) struct ReadAhead {
    /// The last position handed out.
    after: Position,
    /// What is left of the page being handed out.
    current: std::vec::IntoIter<RecordedEvent>,
    /// Whether the reader stopped (head reached or error) and every page it read has been received.
    ended: bool,
    /// A read error that came after events still to hand out; reported by the next call.
    failed: Option<annals::Error>,
    pages: mpsc::Receiver<annals::Result<Vec<RecordedEvent>>>,
    task: JoinHandle<()>,
}

impl ReadAhead {
    /// Starts reading pages of `page` events after `after`, keeping at most `depth` of them waiting.
    pub(crate) fn start(
        store: Arc<dyn EventStore>,
        after: Position,
        page: usize,
        depth: usize,
    ) -> Self {
        let (sender, pages) = mpsc::channel(depth.max(1));
        let page = page.max(1);
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
        Self {
            after,
            current: Vec::new().into_iter(),
            ended: false,
            failed: None,
            pages,
            task,
        }
    }

    /// The position the next batch starts after: the last position handed out so far.
    pub(crate) fn after(&self) -> Position {
        self.after
    }

    /// The next batch of up to `batch` events, filled across pages; fewer only when the reader reached the head,
    /// and empty when nothing was left (the reader has then stopped).
    ///
    /// # Errors
    /// The store's error reading a page (the reader has then stopped; the events before it were handed out
    /// already), or [`annals::Error::Backend`] when the reading task ended without a page (it panicked).
    pub(crate) async fn next(&mut self, batch: usize) -> annals::Result<Vec<RecordedEvent>> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let batch = batch.max(1);
        let mut events: Vec<RecordedEvent> = self.current.by_ref().take(batch).collect();
        while events.len() < batch && !self.ended {
            match self.pages.recv().await {
                Some(Ok(page)) if page.is_empty() => self.ended = true,
                Some(Ok(page)) => {
                    self.current = page.into_iter();
                    events.extend(self.current.by_ref().take(batch - events.len()));
                }
                Some(Err(e)) => {
                    self.ended = true;
                    if events.is_empty() {
                        return Err(e);
                    }
                    // Hand out what came before the failed page first; the next call reports the failure.
                    self.failed = Some(e);
                }
                None if events.is_empty() => {
                    return Err(annals::Error::Backend {
                        operation: "read_all",
                        source: format!(
                            "the task reading ahead after position {} stopped without a page",
                            self.after
                        )
                        .into(),
                    });
                }
                None => self.ended = true,
            }
        }
        self.handed_out(&events);
        Ok(events)
    }

    fn handed_out(&mut self, events: &[RecordedEvent]) {
        if let Some(last) = events.last() {
            self.after = last.position;
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use annals::{AppendResult, ExpectedVersion, NewEvent, StreamId, StreamVersion, async_trait};
    use annals_memory::MemoryStore;

    use super::*;

    /// A memory store whose global reads fail after `fail_after`, to see how a read error travels.
    struct FailingAfter {
        inner: MemoryStore,
        fail_after: Position,
    }

    #[async_trait]
    impl EventStore for FailingAfter {
        async fn append(
            &self,
            stream: &StreamId,
            expected: ExpectedVersion,
            events: Vec<NewEvent>,
        ) -> annals::Result<AppendResult> {
            self.inner.append(stream, expected, events).await
        }

        async fn read_stream(
            &self,
            stream: &StreamId,
            from: StreamVersion,
            limit: usize,
        ) -> annals::Result<Vec<RecordedEvent>> {
            self.inner.read_stream(stream, from, limit).await
        }

        async fn read_all(
            &self,
            after: Position,
            limit: usize,
        ) -> annals::Result<Vec<RecordedEvent>> {
            if after >= self.fail_after {
                return Err(annals::Error::Unavailable {
                    operation: "read_all",
                    source: format!("injected failure after position {after}").into(),
                });
            }
            self.inner.read_all(after, limit).await
        }

        async fn head(&self) -> annals::Result<Position> {
            self.inner.head().await
        }

        async fn wait_for_events(
            &self,
            after: Position,
            timeout: Duration,
        ) -> annals::Result<Position> {
            self.inner.wait_for_events(after, timeout).await
        }
    }

    async fn store_with(events: u64, fail_after: u64) -> Arc<dyn EventStore> {
        let inner = MemoryStore::new();
        let stream = StreamId::new("read-ahead-1").unwrap();
        for n in 0..events {
            let event = NewEvent::new("Counted", serde_json::json!({ "n": n }));
            inner
                .append(&stream, ExpectedVersion::Any, vec![event])
                .await
                .unwrap();
        }
        Arc::new(FailingAfter {
            inner,
            fail_after: Position(fail_after),
        })
    }

    fn positions(events: &[RecordedEvent]) -> Vec<u64> {
        events.iter().map(|e| e.position.get()).collect()
    }

    #[tokio::test]
    async fn batches_are_cut_from_larger_pages_and_filled_across_them() {
        let store = store_with(23, u64::MAX).await;
        let mut ahead = ReadAhead::start(store, Position(2), 5, 2);
        let mut sizes = Vec::new();
        let mut seen = Vec::new();
        loop {
            let batch = ahead.next(4).await.unwrap();
            if batch.is_empty() {
                break;
            }
            assert_eq!(ahead.after(), batch[batch.len() - 1].position);
            sizes.push(batch.len());
            seen.extend(positions(&batch));
        }
        assert_eq!(sizes, [4, 4, 4, 4, 4, 1]);
        assert_eq!(seen, (3..=23).collect::<Vec<_>>());
        assert!(ahead.next(4).await.unwrap().is_empty(), "stays at the head");
    }

    #[tokio::test]
    async fn a_read_error_comes_after_the_events_read_before_it() {
        let store = store_with(23, 10).await;
        let mut ahead = ReadAhead::start(store, Position::START, 5, 2);
        assert_eq!(positions(&ahead.next(4).await.unwrap()), [1, 2, 3, 4]);
        assert_eq!(positions(&ahead.next(4).await.unwrap()), [5, 6, 7, 8]);
        assert_eq!(positions(&ahead.next(4).await.unwrap()), [9, 10]);
        match ahead.next(4).await {
            Err(annals::Error::Unavailable { source, .. }) => {
                assert!(source.to_string().contains("after position 10"), "{source}");
            }
            other => panic!("expected the read error, got {other:?}"),
        }
        assert_eq!(ahead.after(), Position(10));
    }
}
