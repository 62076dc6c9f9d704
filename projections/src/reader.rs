//! [`DocumentReader`]: the query side of a document projection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::Position;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;

use crate::backend::Backend;
use crate::error::{Error, Result};

/// How long [`DocumentReader::caught_up_to`] waits by default: five seconds.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(5);

/// Queries the live read model of one document projection: `get`, `list` by key prefix, and
/// [`caught_up_to`](DocumentReader::caught_up_to) for read-your-writes. Cheap to clone.
///
/// It always reads the live generation: during a blue/green rebuild the old version, after the switch the new
/// one.
#[derive(Clone)]
pub struct DocumentReader {
    pub(crate) name: String,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) changes: watch::Receiver<Position>,
    pub(crate) max_wait: Duration,
}

impl std::fmt::Debug for DocumentReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentReader")
            .field("projection", &self.name)
            .finish_non_exhaustive()
    }
}

impl DocumentReader {
    /// The projection's name.
    pub fn projection(&self) -> &str {
        &self.name
    }

    /// The document at `(collection, key)`, or `None`.
    ///
    /// # Errors
    /// [`Error::Document`] when it does not deserialize into `T`; [`Error::Database`] when the read fails.
    pub async fn get<T: DeserializeOwned>(
        &self,
        collection: &str,
        key: impl AsRef<str>,
    ) -> Result<Option<T>> {
        let key = key.as_ref();
        match self.backend.get_doc(&self.name, collection, key).await? {
            None => Ok(None),
            Some(value) => decode(collection, key, value).map(Some),
        }
    }

    /// The documents of `collection` whose key starts with `prefix` (`""` for all), in key order (bytewise).
    ///
    /// # Errors
    /// As for [`get`](Self::get).
    pub async fn list<T: DeserializeOwned>(
        &self,
        collection: &str,
        prefix: &str,
    ) -> Result<Vec<(String, T)>> {
        self.list_limit(collection, prefix, usize::MAX).await
    }

    /// Like [`list`](Self::list), at most `limit` documents.
    ///
    /// # Errors
    /// As for [`get`](Self::get).
    pub async fn list_limit<T: DeserializeOwned>(
        &self,
        collection: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, T)>> {
        self.page(collection, prefix, None, limit).await
    }

    /// One page of [`list`](Self::list): at most `limit` documents of `collection` whose key starts with
    /// `prefix`, in key order, starting after the key `after` (the last key of the previous page; `None` for the
    /// first page). A long list is read page by page this way, never loaded whole.
    ///
    /// ```no_run
    /// # async fn example(reader: annals_projections::DocumentReader) -> annals_projections::Result<()> {
    /// let mut after = None;
    /// loop {
    ///     let page = reader.page::<serde_json::Value>("entries", "acc-1/", after.as_deref(), 100).await?;
    ///     let Some((last, _)) = page.last() else { break };
    ///     after = Some(last.clone());
    ///     // ... use the page ...
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As for [`get`](Self::get).
    pub async fn page<T: DeserializeOwned>(
        &self,
        collection: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, T)>> {
        self.backend
            .list_docs(&self.name, collection, prefix, after, limit)
            .await?
            .into_iter()
            .map(|(key, value)| {
                let doc = decode(collection, &key, value)?;
                Ok((key, doc))
            })
            .collect()
    }

    /// The position of the last event the live read model has processed.
    ///
    /// # Errors
    /// [`Error::Database`] when the read fails.
    pub async fn position(&self) -> Result<Position> {
        self.backend.checkpoint(&self.name).await
    }

    /// Read-your-writes: waits until the read model has processed `min_position` (the position a write answered
    /// with), at most [`max_wait`](Self::max_wait); `None` asks for nothing and returns at once.
    ///
    /// ```no_run
    /// # async fn example(reader: annals_projections::DocumentReader, min_position: Option<annals::Position>)
    /// # -> annals_projections::Result<()> {
    /// reader.caught_up_to(min_position).await?; // Error::Lagging after the reader's max wait: answer 504
    /// let balance: Option<u64> = reader.get("accounts", "acc-1").await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Lagging`] when it has not in time; [`Error::Database`] when the read fails.
    pub async fn caught_up_to(&self, min_position: Option<Position>) -> Result<()> {
        match min_position {
            Some(position) => self
                .wait_for_position(position, self.max_wait)
                .await
                .map(drop),
            None => Ok(()),
        }
    }

    /// How long [`caught_up_to`](Self::caught_up_to) waits ([`DEFAULT_MAX_WAIT`] unless set).
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// Sets how long [`caught_up_to`](Self::caught_up_to) waits before [`Error::Lagging`].
    pub fn set_max_wait(&mut self, max_wait: Duration) {
        self.max_wait = max_wait;
    }

    /// Waits until the read model has processed `position` (for example the position an append returned), at
    /// most `timeout`; returns the position reached.
    ///
    /// # Errors
    /// [`Error::Lagging`] on timeout (answer HTTP 504); [`Error::Database`] when the read fails.
    pub async fn wait_for_position(
        &self,
        position: Position,
        timeout: Duration,
    ) -> Result<Position> {
        wait_for(
            &*self.backend,
            &self.name,
            self.changes.clone(),
            position,
            timeout,
        )
        .await
    }
}

fn decode<T: DeserializeOwned>(collection: &str, key: &str, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|source| Error::Document {
        collection: collection.to_owned(),
        key: key.to_owned(),
        source,
    })
}

/// Waits for `name`'s live checkpoint to reach `position`: woken at once by runners in this process, and
/// checking the stored checkpoint with a growing interval (5 ms to 200 ms) for runners elsewhere.
pub(crate) async fn wait_for(
    backend: &dyn Backend,
    name: &str,
    mut changes: watch::Receiver<Position>,
    position: Position,
    timeout: Duration,
) -> Result<Position> {
    let started = Instant::now();
    // A timeout too long to represent (`Duration::MAX`: "forever") waits without a deadline.
    let deadline = started.checked_add(timeout);
    let mut interval = Duration::from_millis(5);
    loop {
        changes.borrow_and_update();
        let reached = backend.checkpoint(name).await?;
        if reached >= position {
            return Ok(reached);
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Err(Error::Lagging {
                projection: name.to_owned(),
                position,
                reached,
                waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            });
        }
        let wait = deadline.map_or(interval, |d| interval.min(d - now));
        tokio::select! {
            r = changes.changed() => {
                if r.is_err() {
                    tokio::time::sleep(wait).await;
                }
            }
            () = tokio::time::sleep(wait) => {}
        }
        interval = (interval * 2).min(Duration::from_millis(200));
    }
}
