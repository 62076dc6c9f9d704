//! Read-your-writes against a document read model (feature `projections`): [`MinPosition::wait_for`] and the
//! mapping of `annals-projections`' errors onto [`HttpError`].

use annals_projections::DocumentReader;

use crate::error::HttpError;
use crate::min_position::MinPosition;

impl MinPosition {
    /// Read-your-writes in one call: waits until `store`'s head reaches the position
    /// ([`reachable_within`](Self::reachable_within): a position the store never handed out is
    /// `422 position_beyond_head` at once; one a write answered with is waited for while an append below it
    /// commits, `504 position_pending` when the wait ends first), then
    /// until `reader`'s read model has processed it: both within the reader's
    /// [`max_wait`](DocumentReader::max_wait) (then `504 projection_lagging`). Without `?min_position` it
    /// returns at once.
    ///
    /// ```no_run
    /// use annals_axum::{HttpError, MinPosition};
    /// use annals_projections::DocumentReader;
    ///
    /// async fn balance(
    ///     store: &dyn annals::EventStore,
    ///     balances: &DocumentReader,
    ///     min_position: MinPosition,
    /// ) -> Result<Option<u64>, HttpError> {
    ///     min_position.wait_for(store, balances).await?;
    ///     Ok(balances.get("accounts", "acc-1").await?)
    /// }
    /// ```
    ///
    /// # Errors
    /// `422 position_beyond_head`, `504 position_pending`, `504 projection_lagging`, or the store's or read
    /// model's error mapped by
    /// [`HttpError`].
    pub async fn wait_for(
        self,
        store: &dyn annals::EventStore,
        reader: &DocumentReader,
    ) -> Result<(), HttpError> {
        let started = std::time::Instant::now();
        let max_wait = reader.max_wait();
        let Self(position) = self.reachable_within(store, max_wait).await?;
        let Some(position) = position else {
            return Ok(());
        };
        let left = max_wait.saturating_sub(started.elapsed());
        reader.wait_for_position(position, left).await?;
        Ok(())
    }
}

/// `Lagging` → `504 projection_lagging` naming the read model and the positions; the store's errors as
/// [`From<annals::Error>`](HttpError#impl-From<Error>-for-HttpError) maps them; any other transient failure (a
/// lost read-model connection, a busy projection) → `503 unavailable`; the rest (a document that does not decode,
/// an unknown projection) → `500 internal`, naming nothing internal.
impl From<annals_projections::Error> for HttpError {
    fn from(error: annals_projections::Error) -> Self {
        match error {
            annals_projections::Error::Lagging {
                projection,
                position,
                reached,
                ..
            } => Self::lagging(&projection, reached, position),
            annals_projections::Error::Store(error) => error.into(),
            transient if transient.is_transient() => {
                Self::unavailable(transient, "the read model is unavailable; retry later")
            }
            other => Self::internal(other),
        }
    }
}
