//! In-process, per-stream write queues for the [`Repository`](crate::Repository).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;

use crate::ids::StreamId;

type LockMap = HashMap<StreamId, Arc<tokio::sync::Mutex<()>>>;

/// One writer at a time per stream, within this process.
///
/// Optimistic concurrency keeps streams correct across processes, but when many tasks of one process hit the
/// same stream at once, most attempts lose the race, reload and decide again, and some run out of retries.
/// Queueing them per stream in front of the store turns that wasted work into a short wait; races with other
/// processes are still caught by the expected-version check. Clones share the same queues, so give every
/// [`Repository`](crate::Repository) of a process the same `StreamLocks` with
/// [`Repository::with_stream_locks`](crate::Repository::with_stream_locks).
///
/// An entry lives only while someone holds or waits for it, so memory stays bounded by the number of streams
/// being written at the moment.
#[derive(Clone, Default)]
pub struct StreamLocks {
    locks: Arc<Mutex<LockMap>>,
}

impl std::fmt::Debug for StreamLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamLocks")
            .field("streams", &self.map().len())
            .finish()
    }
}

/// The lock of one stream; dropping it lets the next writer of the stream in.
#[must_use = "the stream is unlocked as soon as the guard is dropped"]
pub struct StreamGuard {
    locks: StreamLocks,
    stream: StreamId,
    guard: Option<OwnedMutexGuard<()>>,
}

impl StreamLocks {
    /// A new, empty set of queues.
    pub fn new() -> Self {
        Self::default()
    }

    // No code panics while holding the lock, so a poisoned lock still guards consistent data.
    fn map(&self) -> std::sync::MutexGuard<'_, LockMap> {
        self.locks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for `stream`'s turn (first come, first served) and holds it until the guard is dropped.
    ///
    /// Cancel-safe: when the returned future is dropped while it waits (a client hung up), the stream is
    /// forgotten as soon as no one else holds or waits for it.
    pub async fn lock(&self, stream: &StreamId) -> StreamGuard {
        let lock = self.map().entry(stream.clone()).or_default().clone();
        // Built before waiting, so that dropping this future while it waits drops `turn` too, whose `Drop`
        // removes the entry when this waiter was the last one. (The wait below, which owns `lock`, is dropped
        // first: it lives in an inner scope.)
        let mut turn = StreamGuard {
            locks: self.clone(),
            stream: stream.clone(),
            guard: None,
        };
        turn.guard = Some(lock.lock_owned().await);
        turn
    }

    /// How many streams are locked or waited for right now.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no stream is locked or waited for.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.map();
        // Only the map holds it now: no one holds or waits for this stream.
        if map
            .get(&self.stream)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            map.remove(&self.stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> StreamId {
        StreamId::new(s).unwrap()
    }

    #[tokio::test]
    async fn streams_are_forgotten_when_released() {
        let locks = StreamLocks::new();
        let a = locks.lock(&id("a")).await;
        let b = locks.lock(&id("b")).await;
        assert_eq!(locks.len(), 2);
        drop(a);
        assert_eq!(locks.len(), 1);
        drop(b);
        assert!(locks.is_empty());
    }

    /// Polls `waiter` once, so it is queued on the stream's lock, and returns it still waiting.
    async fn queued<F: std::future::Future>(waiter: F) -> std::pin::Pin<Box<F>> {
        let mut waiter = Box::pin(waiter);
        tokio::select! {
            biased;
            _ = &mut waiter => panic!("the waiter must wait"),
            () = std::future::ready(()) => {}
        }
        waiter
    }

    #[tokio::test]
    async fn a_waiter_cancelled_while_waiting_leaves_no_entry() {
        let locks = StreamLocks::new();
        let a = id("a");
        let held = locks.lock(&a).await;
        let waiter = queued(locks.lock(&a)).await;
        drop(waiter);
        assert_eq!(locks.len(), 1, "the holder still holds it");
        drop(held);
        assert!(locks.is_empty(), "{locks:?}");
    }

    #[tokio::test]
    async fn the_last_waiter_cancelled_after_the_holder_left_leaves_no_entry() {
        let locks = StreamLocks::new();
        let a = id("a");
        let held = locks.lock(&a).await;
        let mut waiters = Vec::new();
        for _ in 0..10 {
            waiters.push(queued(locks.lock(&a)).await);
        }
        // The holder leaves while others wait: the entry stays for them.
        drop(held);
        assert_eq!(locks.len(), 1);
        // Every waiter is cancelled (clients hung up) before it got its turn.
        drop(waiters);
        assert!(locks.is_empty(), "{locks:?}");
        // The stream is usable again.
        drop(locks.lock(&id("a")).await);
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn a_second_writer_waits_for_the_first() {
        let locks = StreamLocks::new();
        let first = locks.lock(&id("a")).await;
        let other_stream = locks.lock(&id("b")).await;
        let (entered_tx, mut entered) = tokio::sync::oneshot::channel();
        let second = tokio::spawn({
            let locks = locks.clone();
            async move {
                let _held = locks.lock(&id("a")).await;
                let _ = entered_tx.send(());
            }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(entered.try_recv().is_err(), "the second writer must wait");
        drop(first);
        second.await.unwrap();
        drop(other_stream);
        assert!(locks.is_empty());
    }
}
