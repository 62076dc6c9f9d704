//! Typed document projections: [`EventProjection`] receives decoded events of one type, with their envelope, and
//! wants exactly that type's events.

use annals::{Event, Position, Recorded, RecordedEvent, async_trait};

use crate::documents::Documents;
use crate::error::{BoxError, Error};
use crate::policy::ProjectionOptions;
use crate::projection::Projection;
use crate::projections::Projections;

/// A document projection over one event type: the runner hands it each event of [`Self::Event`] decoded (after
/// upcasting), as a [`Recorded`] that keeps the envelope (stream, version, position, recorded-at, metadata, event
/// id) at hand. Its event-type filter is the type's persisted names ([`Event::event_types`]), so it cannot drift
/// out of date; events of other types are skipped (the checkpoint still moves past them). Register it with
/// [`Projections::typed`]. It runs unchanged in memory and on PostgreSQL, like any [`Projection`].
///
/// ```
/// use annals::{Recorded, StreamKey};
/// use annals_projections::{BoxError, Documents, EventProjection, async_trait};
///
/// #[derive(Debug, serde::Serialize, serde::Deserialize)]
/// enum AccountEvent {
///     #[serde(rename = "AccountOpened")]
///     Opened { owner: String },
///     #[serde(rename = "MoneyDeposited")]
///     Deposited { amount: u64 },
/// }
/// impl annals::Event for AccountEvent {}
///
/// struct Balances;
///
/// #[async_trait]
/// impl EventProjection for Balances {
///     type Event = AccountEvent;
///
///     fn name(&self) -> &str { "balances" }
///
///     async fn apply(&self, event: Recorded<'_, AccountEvent>, docs: &mut Documents<'_>) -> Result<(), BoxError> {
///         let account = event.stream_id();
///         let balance = match event.into_event() {
///             AccountEvent::Opened { .. } => 0,
///             AccountEvent::Deposited { amount } => docs.get::<u64>("accounts", account).await?.unwrap_or(0) + amount,
///         };
///         docs.put("accounts", account, &balance)?;
///         Ok(())
///     }
/// }
/// ```
///
/// # Errors
/// An error from `apply`, and a stored event of a wanted name whose payload does not decode into `Self::Event`,
/// go to the projection's [`FailurePolicy`](crate::FailurePolicy) exactly like a failing
/// [`Projection::apply`]; the decode error names the event's stream, version, position and type.
#[async_trait]
pub trait EventProjection: Send + Sync + 'static {
    /// The event type it folds.
    type Event: Event;

    /// The stable name (see [`Projection::name`]).
    fn name(&self) -> &str;

    /// Applies one decoded event to the documents, in position order.
    async fn apply(
        &self,
        event: Recorded<'_, Self::Event>,
        docs: &mut Documents<'_>,
    ) -> Result<(), BoxError>;

    /// See [`Projection::version`].
    fn version(&self) -> u32 {
        1
    }

    /// See [`Projection::reset`].
    async fn reset(&self) -> Result<(), BoxError> {
        Ok(())
    }

    /// See [`Projection::caught_up`].
    async fn caught_up(&self, _position: Position) {}
}

/// The [`Projection`] a typed projection runs as: filters on its type's names, decodes, delegates.
struct Typed<P> {
    projection: P,
    event_types: &'static [&'static str],
}

#[async_trait]
impl<P: EventProjection> Projection for Typed<P> {
    fn name(&self) -> &str {
        self.projection.name()
    }

    async fn apply(&self, event: &RecordedEvent, docs: &mut Documents<'_>) -> Result<(), BoxError> {
        let decoded = Recorded::decode(event)?;
        self.projection.apply(decoded, docs).await
    }

    fn version(&self) -> u32 {
        self.projection.version()
    }

    fn event_types(&self) -> &[&str] {
        self.event_types
    }

    async fn reset(&self) -> Result<(), BoxError> {
        self.projection.reset().await
    }

    async fn caught_up(&self, position: Position) {
        self.projection.caught_up(position).await;
    }
}

/// The persisted names of `E`, refusing a type that names none (an empty filter would mean every event).
pub(crate) fn names_of<E: Event>(projection: &str) -> Result<&'static [&'static str], Error> {
    match E::event_types() {
        Ok(names) if !names.is_empty() => Ok(names),
        Ok(_) => Err(Error::Config {
            reason: format!(
                "typed projection {projection:?}: {} has no deserializable variant, so it wants no event",
                std::any::type_name::<E>()
            ),
        }),
        Err(e) => Err(Error::Config {
            reason: format!("typed projection {projection:?}: {e}"),
        }),
    }
}

impl Projections {
    /// Registers a typed document projection with default options (see [`with`](Self::with)). The set also
    /// upcasts `P::Event` ([`upcasting`](Self::upcasting)), so events stored under an old name that
    /// [`Event::upcast`] renames reach it (and every other projection of the set) under their current name.
    pub fn typed(self, projection: impl EventProjection) -> Self {
        self.typed_with_options(projection, ProjectionOptions::default())
    }

    /// Registers a typed document projection with options (see [`typed`](Self::typed)).
    ///
    /// # Errors
    /// When `P::Event`'s persisted names cannot be read ([`Event::event_types`]), every use of the set answers
    /// [`Error::Config`] naming the projection.
    pub fn typed_with_options<P: EventProjection>(
        self,
        projection: P,
        options: ProjectionOptions,
    ) -> Self {
        match names_of::<P::Event>(projection.name()) {
            Ok(event_types) => self.upcasting::<P::Event>().with_options(
                Typed {
                    projection,
                    event_types,
                },
                options,
            ),
            Err(error) => self.refuse(error),
        }
    }
}
