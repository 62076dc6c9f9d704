//! The two kinds of projection: [`Projection`] (backend-neutral documents) and [`SqlProjection`] (its own
//! PostgreSQL tables).

use annals::{Position, RecordedEvent, async_trait};

use crate::documents::Documents;
use crate::error::BoxError;
#[cfg(feature = "postgres")]
use crate::sql::SqlTx;

/// A projection that folds events into JSON documents addressed by `(collection, key)`. It runs unchanged on the
/// in-memory backend and on PostgreSQL.
///
/// The runner applies events in position order, in batches; the document writes of a batch and the projection's
/// checkpoint are committed together, so a crash neither loses nor applies an event twice. Effects outside the
/// read model (emails, other services) are delivered at least once: use [`RecordedEvent::event_id`] to
/// de-duplicate them.
///
/// # Implementing
/// Two methods are required: a stable [`name`](Projection::name) (its checkpoint key and part of table names:
/// `a-z`, `0-9`, `_`, at most 40 characters) and [`apply`](Projection::apply). Bump
/// [`version`](Projection::version) when `apply` changes meaning: the runner then rebuilds the read model into
/// fresh storage while the old one keeps serving reads, and switches over when the new one has caught up.
///
/// ```
/// use annals::RecordedEvent;
/// use annals_projections::{BoxError, Documents, Projection, async_trait};
///
/// struct EventCounts;
///
/// #[async_trait]
/// impl Projection for EventCounts {
///     fn name(&self) -> &str { "event_counts" }
///
///     async fn apply(&self, event: &RecordedEvent, docs: &mut Documents<'_>) -> Result<(), BoxError> {
///         let count = docs.get::<u64>("by_type", &event.event_type).await?.unwrap_or(0);
///         docs.put("by_type", &event.event_type, &(count + 1))?;
///         Ok(())
///     }
/// }
/// ```
///
/// # Errors
/// An error from `apply` is handled by the projection's [`FailurePolicy`](crate::FailurePolicy): stop (default),
/// retry with backoff, or park the event in the dead-letter list and continue. The batch it happened in is rolled
/// back and the events before it are committed again, so nothing is half-applied.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// The stable name: checkpoint key, CLI name and part of storage names. Never change it.
    fn name(&self) -> &str;

    /// Applies one event to the documents. Called in position order, only for the
    /// [`event_types`](Projection::event_types) it wants.
    async fn apply(&self, event: &RecordedEvent, docs: &mut Documents<'_>) -> Result<(), BoxError>;

    /// The version of the projection's logic; bumping it means "rebuild me". Defaults to 1.
    fn version(&self) -> u32 {
        1
    }

    /// The event types it wants; the runner skips the rest (but still advances the checkpoint past them).
    /// Empty (the default) means every event.
    fn event_types(&self) -> &[&str] {
        &[]
    }

    /// Work outside the read model that must be done before `event` counts as applied (a process manager's
    /// appends, commands and timers). The runner calls it in position order, for the wanted events, *before* the
    /// batch's transaction opens and never inside it, so a slow effect holds no transaction and no row lock; a
    /// batch whose effects outlast a third of the lease is cut there and committed as far as its effects got
    /// (the commit renews the lease). It is called again for an event after a crash, a lost lease or a failed
    /// commit, so it must be idempotent; an error is the event's failure (the failure policy decides, and the
    /// events before it are committed). Defaults to nothing.
    async fn effects(&self, _event: &RecordedEvent) -> Result<(), BoxError> {
        Ok(())
    }

    /// Called before the read model is built from scratch (first run, reset, rebuild). Clear any state you keep
    /// outside the documents here. Defaults to nothing.
    async fn reset(&self) -> Result<(), BoxError> {
        Ok(())
    }

    /// Called when the runner has caught up with the store's head (after catch-up, and after each burst of live
    /// events). Defaults to nothing.
    async fn caught_up(&self, _position: Position) {}
}

/// A projection that writes its own PostgreSQL tables inside the runner's transaction.
///
/// The runner gives it a transaction and the schema of the read-model generation being built
/// ([`SqlTx::schema`], [`SqlTx::table`]): the live generation during normal running, a fresh one during a
/// blue/green rebuild. Always qualify table names with [`SqlTx::table`]; readers query the stable schema
/// [`Projections::schema`](crate::Projections::schema), which the switch-over renames atomically.
///
/// # Implementing
/// Three methods are required: [`name`](SqlProjection::name), [`setup`](SqlProjection::setup) (create the tables
/// in `tx.schema()`) and [`apply`](SqlProjection::apply). Override [`apply_batch`](SqlProjection::apply_batch)
/// to write a whole batch with a few set-based statements.
///
/// # Errors
/// As for [`Projection`]: errors go to the failure policy; the transaction is rolled back.
#[cfg(feature = "postgres")]
#[async_trait]
pub trait SqlProjection: Send + Sync + 'static {
    /// The stable name (see [`Projection::name`]).
    fn name(&self) -> &str;

    /// Creates the projection's tables (and indexes) in `tx.schema()`. Called once per generation, in the
    /// transaction that creates it.
    async fn setup(&self, tx: &mut SqlTx<'_>) -> Result<(), BoxError>;

    /// Applies one event.
    async fn apply(&self, event: &RecordedEvent, tx: &mut SqlTx<'_>) -> Result<(), BoxError>;

    /// Applies a batch of (wanted) events, in order. The default calls [`apply`](SqlProjection::apply) for each.
    ///
    /// # Errors
    /// The index of the event that failed, with its error. When an override cannot tell which event failed,
    /// return index 0: the runner then retries the events one by one to find it.
    async fn apply_batch(
        &self,
        events: &[&RecordedEvent],
        tx: &mut SqlTx<'_>,
    ) -> Result<(), (usize, BoxError)> {
        for (index, event) in events.iter().enumerate() {
            self.apply(event, tx).await.map_err(|e| (index, e))?;
        }
        Ok(())
    }

    /// See [`Projection::version`].
    fn version(&self) -> u32 {
        1
    }

    /// See [`Projection::event_types`].
    fn event_types(&self) -> &[&str] {
        &[]
    }

    /// See [`Projection::caught_up`].
    async fn caught_up(&self, _position: Position) {}
}
