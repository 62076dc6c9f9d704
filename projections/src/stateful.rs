//! Stateful projections: [`StatefulProjection`] receives each event of an aggregate's streams together with the
//! aggregate's state after it, folded by the aggregate's own [`Aggregate::apply`] and kept in the read model as
//! one [`Snapshot`] document per stream. [`Snapshots`] is the stateful projection that does nothing more: the
//! aggregate is its own read model.

use std::marker::PhantomData;

use annals::{Aggregate, Position, Recorded, StreamId, StreamVersion, async_trait};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::documents::Documents;
use crate::error::{BoxError, Result};
use crate::policy::ProjectionOptions;
use crate::projections::Projections;
use crate::reader::DocumentReader;
use crate::typed::EventProjection;

/// The collection a stateful projection keeps its streams' [`Snapshot`]s in, keyed by stream id. A projection's
/// own collections must use other names.
pub const STATE_COLLECTION: &str = "aggregate_state";

/// The event type of `A`.
type EventOf<A> = <A as Aggregate>::Event;

/// An aggregate's state as of one event of its stream, as a stateful projection stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot<A> {
    /// The stream version of the last event folded in.
    pub version: StreamVersion,
    /// The global position of that event.
    pub position: Position,
    /// The state after it.
    pub state: A,
}

/// A document projection over one aggregate's events that sees, with each event, the aggregate's state after it.
///
/// The runner folds each stream's state with [`Aggregate::apply`] — the same fold the write side decides on, so a
/// read model cannot disagree with it about what an event means — and stores it as a [`Snapshot`] in
/// [`STATE_COLLECTION`], in the same transaction as the documents `apply` writes; [`DocumentReader::snapshot`]
/// reads it back. Events reach it decoded and upcast, as for an [`EventProjection`]. Register it with
/// [`Projections::stateful`].
///
/// The snapshot is one JSON document per stream, read and rewritten for every event (once per batch in the
/// database): this suits aggregates whose state stays small. Changing the aggregate's state type or its `apply`
/// changes what the snapshots hold: bump [`version`](Self::version) to rebuild them.
///
/// An event the [`FailurePolicy`](crate::FailurePolicy) parks is not folded into the snapshot either (its batch is
/// rolled back), so the stream's later states lack it, as the read model does; replaying the parked event folds
/// it into the snapshot of that moment, out of order. After parking an event of a stateful projection, fix the
/// cause and rebuild rather than replay.
///
/// ```
/// use annals::{Aggregate, Recorded};
/// use annals_projections::{BoxError, Documents, StatefulProjection, async_trait};
///
/// #[derive(Debug, serde::Serialize, serde::Deserialize)]
/// enum CounterEvent {
///     Added { by: u64 },
/// }
/// impl annals::Event for CounterEvent {}
///
/// #[derive(Default, serde::Serialize, serde::Deserialize)]
/// struct Counter {
///     total: u64,
/// }
///
/// impl Aggregate for Counter {
///     type Command = u64;
///     type Event = CounterEvent;
///     type Error = std::convert::Infallible;
///     fn decide(&self, by: &u64) -> Result<Vec<CounterEvent>, Self::Error> {
///         Ok(vec![CounterEvent::Added { by: *by }])
///     }
///     fn apply(&mut self, CounterEvent::Added { by }: &CounterEvent) {
///         self.total += by;
///     }
/// }
///
/// /// One document per event: the running total it left.
/// struct Totals;
///
/// #[async_trait]
/// impl StatefulProjection for Totals {
///     type Aggregate = Counter;
///
///     fn name(&self) -> &str { "totals" }
///
///     async fn apply(
///         &self,
///         event: Recorded<'_, CounterEvent>,
///         counter: &Counter,
///         docs: &mut Documents<'_>,
///     ) -> Result<(), BoxError> {
///         docs.put("after", event.position().to_string(), &counter.total)?;
///         Ok(())
///     }
/// }
/// ```
///
/// # Errors
/// As for an [`EventProjection`]; a stored snapshot that no longer deserializes into the aggregate (its type
/// changed without a version bump) fails the event with [`Error::Document`](crate::Error::Document) naming the
/// stream.
#[async_trait]
pub trait StatefulProjection: Send + Sync + 'static {
    /// The aggregate whose state it follows.
    type Aggregate: Aggregate + Serialize + DeserializeOwned;

    /// The stable name (see [`Projection::name`](crate::Projection::name)).
    fn name(&self) -> &str;

    /// Applies one decoded event, with `state` the aggregate's state after it. The default writes nothing beyond
    /// the snapshot.
    async fn apply(
        &self,
        event: Recorded<'_, EventOf<Self::Aggregate>>,
        state: &Self::Aggregate,
        docs: &mut Documents<'_>,
    ) -> Result<(), BoxError> {
        let _ = (event, state, docs);
        Ok(())
    }

    /// See [`Projection::version`](crate::Projection::version).
    fn version(&self) -> u32 {
        1
    }
}

/// The stateful projection whose read model is the aggregate's state itself: one [`Snapshot`] per stream, read
/// with [`DocumentReader::snapshot`].
///
/// ```
/// # #[derive(Default, serde::Serialize, serde::Deserialize)] struct Account;
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] enum AccountEvent { Opened {} }
/// # impl annals::Event for AccountEvent {}
/// # impl annals::Aggregate for Account {
/// #     type Command = (); type Event = AccountEvent; type Error = std::convert::Infallible;
/// #     fn decide(&self, _: &()) -> Result<Vec<AccountEvent>, Self::Error> { Ok(vec![]) }
/// #     fn apply(&mut self, _: &AccountEvent) {}
/// # }
/// use annals_projections::{Projections, Snapshots};
///
/// let projections = Projections::memory(annals_memory::MemoryStore::new())
///     .stateful(Snapshots::<Account>::new("accounts"));
/// ```
pub struct Snapshots<A> {
    name: String,
    version: u32,
    aggregate: PhantomData<fn() -> A>,
}

impl<A> Snapshots<A> {
    /// The snapshot projection called `name`, at version 1.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: 1,
            aggregate: PhantomData,
        }
    }

    /// The same projection at `version` (see [`Projection::version`](crate::Projection::version)).
    #[must_use]
    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }
}

impl<A> std::fmt::Debug for Snapshots<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("name", &self.name)
            .field("aggregate", &std::any::type_name::<A>())
            .field("version", &self.version)
            .finish()
    }
}

impl<A: Aggregate + Serialize + DeserializeOwned> StatefulProjection for Snapshots<A> {
    type Aggregate = A;

    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> u32 {
        self.version
    }
}

/// The [`EventProjection`] a stateful projection runs as: folds the stream's snapshot, then delegates.
struct Stateful<P>(P);

#[async_trait]
impl<P: StatefulProjection> EventProjection for Stateful<P> {
    type Event = EventOf<P::Aggregate>;

    fn name(&self) -> &str {
        self.0.name()
    }

    async fn apply(
        &self,
        event: Recorded<'_, Self::Event>,
        docs: &mut Documents<'_>,
    ) -> Result<(), BoxError> {
        let stream = event.stream_id();
        let mut snapshot = docs
            .get::<Snapshot<P::Aggregate>>(STATE_COLLECTION, stream)
            .await?
            .unwrap_or_else(|| Snapshot {
                version: StreamVersion::NONE,
                position: Position::START,
                state: P::Aggregate::default(),
            });
        snapshot.state.apply(event.event());
        snapshot.version = event.stream_version();
        snapshot.position = event.position();
        docs.put(STATE_COLLECTION, stream, &snapshot)?;
        self.0.apply(event, &snapshot.state, docs).await
    }

    fn version(&self) -> u32 {
        self.0.version()
    }
}

impl Projections {
    /// Registers a stateful projection with default options; as [`typed`](Self::typed), whose rules it follows.
    pub fn stateful(self, projection: impl StatefulProjection) -> Self {
        self.typed(Stateful(projection))
    }

    /// Registers a stateful projection with options (see [`typed_with_options`](Self::typed_with_options)).
    pub fn stateful_with_options(
        self,
        projection: impl StatefulProjection,
        options: ProjectionOptions,
    ) -> Self {
        self.typed_with_options(Stateful(projection), options)
    }
}

impl DocumentReader {
    /// The [`Snapshot`] a stateful projection keeps for `stream`, or `None` when none of its events has been
    /// processed yet.
    ///
    /// # Errors
    /// [`Error::Document`](crate::Error::Document) when the stored snapshot does not deserialize into `A`;
    /// [`Error::Database`](crate::Error::Database) when the read fails.
    pub async fn snapshot<A: DeserializeOwned>(
        &self,
        stream: &StreamId,
    ) -> Result<Option<Snapshot<A>>> {
        self.get(STATE_COLLECTION, stream).await
    }
}
