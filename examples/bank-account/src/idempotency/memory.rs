//! Idempotency keys in process memory: the embedded default, where the events live in memory too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use annals::EventStore;
use axum::http::StatusCode;
use tokio::sync::watch;

use super::{Begun, IdempotencyKeys, Reservation, StoredResponse, WAIT_FOR_OWNER};
use crate::api::error::ApiError;

/// Keys and their responses in a map; racing requests wait on the owner's completion.
#[derive(Default, Clone)]
pub(crate) struct MemoryKeys {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

enum Entry {
    /// The owner is working; the receiver reports when it is done (its sender drops).
    Pending {
        request: String,
        done: watch::Receiver<()>,
    },
    Completed {
        request: String,
        response: StoredResponse,
    },
}

impl MemoryKeys {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // No code panics while holding the lock, so a poisoned lock still guards consistent data.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[annals::async_trait]
impl IdempotencyKeys for MemoryKeys {
    async fn begin(&self, key: &str, request: &str) -> Result<Begun, ApiError> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_OWNER;
        loop {
            let mut done = {
                let mut entries = self.lock();
                match entries.get(key) {
                    None => {
                        let (sender, receiver) = watch::channel(());
                        entries.insert(
                            key.to_owned(),
                            Entry::Pending {
                                request: request.to_owned(),
                                done: receiver,
                            },
                        );
                        return Ok(Begun::Owner(Box::new(MemoryReservation {
                            keys: self.clone(),
                            key: key.to_owned(),
                            request: request.to_owned(),
                            _working: sender,
                            finished: false,
                        })));
                    }
                    Some(
                        Entry::Pending { request: r, .. } | Entry::Completed { request: r, .. },
                    ) if r != request => {
                        return Ok(Begun::Reused);
                    }
                    Some(Entry::Completed { response, .. }) => {
                        return Ok(Begun::Replay(response.clone()));
                    }
                    Some(Entry::Pending { done, .. }) => done.clone(),
                }
            };
            // `changed` fails once the owner's sender is dropped: the owner finished one way or another.
            if tokio::time::timeout_at(deadline, done.changed())
                .await
                .is_err()
            {
                return Err(still_in_progress());
            }
        }
    }
}

pub(super) fn still_in_progress() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "conflict",
        "a request with this Idempotency-Key is still in progress; retry later",
    )
}

struct MemoryReservation {
    keys: MemoryKeys,
    key: String,
    request: String,
    /// Dropped when the reservation ends, which wakes the waiters.
    _working: watch::Sender<()>,
    finished: bool,
}

#[annals::async_trait]
impl Reservation for MemoryReservation {
    fn store(&self) -> Option<Arc<dyn EventStore>> {
        None
    }

    async fn complete(mut self: Box<Self>, response: &StoredResponse) -> Result<(), ApiError> {
        self.keys.lock().insert(
            self.key.clone(),
            Entry::Completed {
                request: std::mem::take(&mut self.request),
                response: response.clone(),
            },
        );
        self.finished = true;
        Ok(())
    }

    async fn release(self: Box<Self>) {
        // Drop removes the pending entry.
    }
}

impl Drop for MemoryReservation {
    fn drop(&mut self) {
        if !self.finished {
            let mut entries = self.keys.lock();
            if matches!(entries.get(&self.key), Some(Entry::Pending { .. })) {
                entries.remove(&self.key);
            }
        }
    }
}
