//! One writer at a time per account within this process.
//!
//! The repository's optimistic concurrency keeps accounts correct across processes, but when many requests in
//! one process hit the same account at once, most of their attempts would lose the race, reload and try again,
//! and some would run out of retries. Queueing them per account in front of the repository turns that wasted
//! work into a short wait; races with other processes are still caught by the expected-version check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;

/// Per-key async locks; an entry lives only while someone holds or waits for it.
#[derive(Clone, Default)]
pub(crate) struct KeyedLocks {
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Holds the lock of one key; releasing it forgets the key when no one else waits.
pub(crate) struct KeyGuard {
    locks: KeyedLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        // No code panics while holding the lock, so a poisoned lock still guards consistent data.
        self.locks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for `key`'s lock.
    pub(crate) async fn lock(&self, key: &str) -> KeyGuard {
        let lock = self.map().entry(key.to_owned()).or_default().clone();
        KeyGuard {
            locks: self.clone(),
            key: key.to_owned(),
            guard: Some(lock.lock_owned().await),
        }
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.map();
        // Only the map holds it now: no one holds or waits for this key.
        if map
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_forgotten_when_released() {
        let locks = KeyedLocks::default();
        let a = locks.lock("a").await;
        let b = locks.lock("b").await;
        assert_eq!(locks.map().len(), 2);
        drop(a);
        assert_eq!(locks.map().len(), 1);
        drop(b);
        assert!(locks.map().is_empty());
    }

    #[tokio::test]
    async fn a_second_locker_waits_for_the_first() {
        let locks = KeyedLocks::default();
        let first = locks.lock("a").await;
        let second = tokio::spawn({
            let locks = locks.clone();
            async move {
                let _held = locks.lock("a").await;
            }
        });
        tokio::task::yield_now().await;
        assert!(!second.is_finished());
        drop(first);
        second.await.unwrap();
        assert!(locks.map().is_empty());
    }
}
