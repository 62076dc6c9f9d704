//! [`Recorded`]: a decoded domain event together with the envelope the store recorded around it.

use chrono::{DateTime, Utc};

use crate::category::{ForeignStream, StreamKey};
use crate::error::Result;
use crate::event::{Event, Metadata, RecordedEvent};
use crate::ids::{EventId, Position, StreamId, StreamVersion};

/// A domain event of type `E`, decoded (after upcasting) from the [`RecordedEvent`] it borrows, whose envelope
/// (event id, stream, version, position, recorded-at, metadata) stays at hand.
///
/// The envelope's accessors borrow the recorded event, not the `Recorded`, so they can be read before the event
/// is moved out with [`into_event`](Recorded::into_event):
///
/// ```
/// use annals::{EventId, Metadata, Position, Recorded, RecordedEvent, StreamId, StreamVersion};
///
/// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// enum AccountEvent {
///     #[serde(rename = "MoneyDeposited")]
///     Deposited { amount: u64 },
/// }
/// impl annals::Event for AccountEvent {}
///
/// let stored = RecordedEvent {
///     event_id: EventId::new(), stream_id: StreamId::new("account-1")?, stream_version: StreamVersion(3),
///     position: Position(42), recorded_at: chrono::Utc::now(), event_type: "MoneyDeposited".into(),
///     schema_version: 1, payload: serde_json::json!({"amount": 5}).into(), metadata: Metadata::default(),
/// };
/// let event = Recorded::<AccountEvent>::decode(&stored)?;
/// let stream = event.stream_id();
/// let AccountEvent::Deposited { amount } = event.into_event();
/// assert_eq!((stream.as_str(), amount), ("account-1", 5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded<'a, E> {
    event: E,
    recorded: &'a RecordedEvent,
}

impl<'a, E: Event> Recorded<'a, E> {
    /// Decodes `recorded` into `E` (upcasting it first, see [`RecordedEvent::decode`]).
    ///
    /// # Errors
    /// [`Error::Decode`](crate::Error::Decode) naming the stream, version, position and event type when the
    /// event cannot be upcast or does not fit `E`.
    pub fn decode(recorded: &'a RecordedEvent) -> Result<Self> {
        Ok(Self {
            event: recorded.decode()?,
            recorded,
        })
    }
}

impl<'a, E> Recorded<'a, E> {
    /// Pairs an already decoded `event` with the recorded event it came from (for tests of code that takes a
    /// `Recorded`, and for adapters that decode themselves). Nothing checks that they match.
    pub fn from_parts(event: E, recorded: &'a RecordedEvent) -> Self {
        Self { event, recorded }
    }

    /// The decoded event.
    pub fn event(&self) -> &E {
        &self.event
    }

    /// The decoded event, by value.
    pub fn into_event(self) -> E {
        self.event
    }

    /// The recorded event: the envelope, and the event's persisted type, schema version and payload.
    pub fn recorded(&self) -> &'a RecordedEvent {
        self.recorded
    }

    /// The event's unique id (de-duplicate effects outside a read model with it).
    pub fn event_id(&self) -> EventId {
        self.recorded.event_id
    }

    /// The stream the event belongs to.
    pub fn stream_id(&self) -> &'a StreamId {
        &self.recorded.stream_id
    }

    /// The typed id of the event's stream: `AccountId` "42" for an event of `account-42`.
    ///
    /// # Errors
    /// [`ForeignStream`], naming the stream, when it is of another category or its key is not a valid `K`.
    pub fn stream_key<K: StreamKey>(&self) -> std::result::Result<K, ForeignStream> {
        K::of_stream(&self.recorded.stream_id)
    }

    /// The event's version in its stream.
    pub fn stream_version(&self) -> StreamVersion {
        self.recorded.stream_version
    }

    /// The event's store-wide position.
    pub fn position(&self) -> Position {
        self.recorded.position
    }

    /// When the store recorded the event.
    pub fn recorded_at(&self) -> DateTime<Utc> {
        self.recorded.recorded_at
    }

    /// The event's correlation, causation and free-form metadata.
    pub fn metadata(&self) -> &'a Metadata {
        &self.recorded.metadata
    }
}
