//! Typed SQL projections (PostgreSQL): [`EventSqlProjection`] receives decoded events of one type, with their
//! envelope, inside the runner's transaction.

use annals::{Event, Position, Recorded, RecordedEvent, async_trait};

use crate::error::BoxError;
use crate::policy::ProjectionOptions;
use crate::projection::SqlProjection;
use crate::projections::Projections;
use crate::sql::SqlTx;
use crate::typed::names_of;

/// A [`SqlProjection`] over one event type: it gets each event of [`Self::Event`] decoded (after upcasting) as a
/// [`Recorded`], and its event-type filter is the type's persisted names ([`Event::event_types`]). Register it
/// with [`Projections::typed_sql`].
///
/// # Implementing
/// Three methods are required, as for [`SqlProjection`]: [`name`](Self::name), [`setup`](Self::setup) and
/// [`apply`](Self::apply); override [`apply_batch`](Self::apply_batch) to write a batch with set-based
/// statements.
///
/// # Errors
/// As for [`SqlProjection`]; a stored event of a wanted name that does not decode fails that event (the failure
/// policy decides), naming its stream, version, position and type.
#[async_trait]
pub trait EventSqlProjection: Send + Sync + 'static {
    /// The event type it folds.
    type Event: Event;

    /// The stable name (see [`crate::Projection::name`]).
    fn name(&self) -> &str;

    /// See [`SqlProjection::setup`].
    async fn setup(&self, tx: &mut SqlTx<'_>) -> Result<(), BoxError>;

    /// Applies one decoded event.
    async fn apply(
        &self,
        event: Recorded<'_, Self::Event>,
        tx: &mut SqlTx<'_>,
    ) -> Result<(), BoxError>;

    /// Applies a batch of decoded events, in order. The default calls [`apply`](Self::apply) for each.
    ///
    /// # Errors
    /// The index of the event that failed, with its error (index 0 when unknown: the runner then retries the
    /// events one by one).
    async fn apply_batch(
        &self,
        events: Vec<Recorded<'_, Self::Event>>,
        tx: &mut SqlTx<'_>,
    ) -> Result<(), (usize, BoxError)> {
        for (index, event) in events.into_iter().enumerate() {
            self.apply(event, tx).await.map_err(|e| (index, e))?;
        }
        Ok(())
    }

    /// See [`SqlProjection::version`].
    fn version(&self) -> u32 {
        1
    }

    /// See [`SqlProjection::caught_up`].
    async fn caught_up(&self, _position: Position) {}
}

/// The [`SqlProjection`] a typed SQL projection runs as: filters on its type's names, decodes, delegates.
struct TypedSql<P> {
    projection: P,
    event_types: &'static [&'static str],
}

#[async_trait]
impl<P: EventSqlProjection> SqlProjection for TypedSql<P> {
    fn name(&self) -> &str {
        self.projection.name()
    }

    async fn setup(&self, tx: &mut SqlTx<'_>) -> Result<(), BoxError> {
        self.projection.setup(tx).await
    }

    async fn apply(&self, event: &RecordedEvent, tx: &mut SqlTx<'_>) -> Result<(), BoxError> {
        let decoded = Recorded::decode(event)?;
        self.projection.apply(decoded, tx).await
    }

    async fn apply_batch(
        &self,
        events: &[&RecordedEvent],
        tx: &mut SqlTx<'_>,
    ) -> Result<(), (usize, BoxError)> {
        let mut decoded = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            decoded.push(Recorded::decode(event).map_err(|e| (index, e.into()))?);
        }
        self.projection.apply_batch(decoded, tx).await
    }

    fn version(&self) -> u32 {
        self.projection.version()
    }

    fn event_types(&self) -> &[&str] {
        self.event_types
    }

    async fn caught_up(&self, position: Position) {
        self.projection.caught_up(position).await;
    }
}

impl Projections {
    /// Registers a typed SQL projection (PostgreSQL backend only) with default options. Like
    /// [`typed`](Self::typed), the set also upcasts `P::Event`.
    pub fn typed_sql(self, projection: impl EventSqlProjection) -> Self {
        self.typed_sql_with_options(projection, ProjectionOptions::default())
    }

    /// Registers a typed SQL projection (PostgreSQL backend only) with options.
    ///
    /// # Errors
    /// As [`typed_with_options`](Self::typed_with_options), and as [`with_sql`](Self::with_sql) on the memory
    /// backend.
    pub fn typed_sql_with_options<P: EventSqlProjection>(
        self,
        projection: P,
        options: ProjectionOptions,
    ) -> Self {
        match names_of::<P::Event>(projection.name()) {
            Ok(event_types) => self.upcasting::<P::Event>().with_sql_options(
                TypedSql {
                    projection,
                    event_types,
                },
                options,
            ),
            Err(error) => self.refuse(error),
        }
    }
}
