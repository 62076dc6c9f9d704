//! Domain events, the envelope a store records around them, and their metadata.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{BoxError, Error, Result};
use crate::ids::{EventId, Position, StreamId, StreamVersion};
use crate::payload::Payload;

/// A domain event type: usually an enum with one variant per thing that happened, in the past tense.
///
/// The persisted name of each variant is its serde name, so give every variant an explicit
/// `#[serde(rename = "...")]` (or keep the variant name stable): it is written next to every stored event and
/// must never change. The enum must use serde's default (externally tagged) representation; the payload
/// stored for a variant is the variant's content alone.
///
/// # Implementing
/// Derive `Serialize` and `Deserialize`, then write an empty `impl`. Override [`Event::schema_version`] when a
/// variant's payload shape changes, so upcasters can tell old payloads from new ones.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum AccountEvent {
///     #[serde(rename = "AccountOpened")]
///     Opened { owner: String },
///     #[serde(rename = "MoneyDeposited")]
///     Deposited { amount: u64 },
/// }
/// impl annals::Event for AccountEvent {}
///
/// use annals::Event;
/// let (name, payload) = AccountEvent::Deposited { amount: 5 }.encode().unwrap();
/// assert_eq!(name, "MoneyDeposited");
/// assert_eq!(payload, serde_json::json!({"amount": 5}));
/// let stored = annals::Payload::from(payload);
/// assert_eq!(AccountEvent::decode(&name, &stored).unwrap(), AccountEvent::Deposited { amount: 5 });
/// ```
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The schema version of this event's payload. Defaults to 1.
    fn schema_version(&self) -> u32 {
        1
    }

    /// Splits the event into its persisted name and payload.
    ///
    /// # Errors
    /// [`Error::Encode`] when serialization fails or the type is not an externally tagged enum.
    fn encode(&self) -> Result<(String, Value)> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) if map.len() == 1 => {
                let Some((name, payload)) = map.into_iter().next() else {
                    return Err(encode_shape_error::<Self>());
                };
                Ok((name, payload))
            }
            Ok(Value::String(name)) => Ok((name, Value::Null)),
            Ok(_) => Err(encode_shape_error::<Self>()),
            Err(source) => Err(Error::Encode {
                reason: format!(
                    "cannot serialize a value of {}: {source}",
                    std::any::type_name::<Self>()
                ),
            }),
        }
    }

    /// Brings a stored payload written under an older schema version up to date, before [`Event::decode`].
    /// Receives the stored name, schema version and payload; returns `Some((name, payload))` to decode instead
    /// (a rename is allowed), or `None` when the stored event is current. Look at the name and version first
    /// and parse the payload ([`Payload::to_value`]) only for events you rewrite: the default returns `None`,
    /// so current events are parsed once, straight from the stored text into the event. See
    /// `docs/event-versioning.md`.
    ///
    /// # Errors
    /// Why the payload cannot be upgraded (a message converts with `?`); it surfaces as [`Error::Decode`]
    /// naming the event.
    fn upcast(
        event_type: &str,
        schema_version: u32,
        payload: &Payload,
    ) -> std::result::Result<Option<(String, Value)>, BoxError> {
        let _ = (event_type, schema_version, payload);
        Ok(None)
    }

    /// The persisted names of this type's events (serde's names of its variants, aliases included): the filter of
    /// a projection over this type, so that it cannot drift from the type. Names an upcaster renames *from* are
    /// not listed (the projections runner filters after upcasting); a name written by an old version with the
    /// same payload can simply be a serde `alias`, which is listed.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// enum AccountEvent {
    ///     #[serde(rename = "AccountOpened")]
    ///     Opened { owner: String },
    ///     #[serde(rename = "MoneyDeposited", alias = "MoneyAdded")]
    ///     Deposited { amount: u64 },
    /// }
    /// impl annals::Event for AccountEvent {}
    ///
    /// use annals::Event;
    /// assert_eq!(AccountEvent::event_types().unwrap(), ["AccountOpened", "MoneyAdded", "MoneyDeposited"]);
    /// ```
    ///
    /// # Errors
    /// [`Error::Encode`] when the type's `Deserialize` does not describe an enum (a hand-written implementation
    /// that never calls `deserialize_enum`): override this method to list the names.
    fn event_types() -> Result<&'static [&'static str]> {
        crate::event_types::of::<Self>()
    }

    /// Rebuilds an event from its persisted name and payload, parsing the payload's text straight into the
    /// variant.
    ///
    /// # Errors
    /// The serde error when `event_type` is not a variant of this type or `payload` does not fit it.
    fn decode(event_type: &str, payload: &Payload) -> std::result::Result<Self, serde_json::Error> {
        Self::deserialize(Tagged {
            name: event_type,
            payload: payload.as_str(),
        })
    }
}

/// A stored event seen as serde's externally tagged enum `{name: payload}`, without building that map.
struct Tagged<'a> {
    name: &'a str,
    payload: &'a str,
}

impl<'de> serde::Deserializer<'de> for Tagged<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> serde::de::EnumAccess<'de> for Tagged<'de> {
    type Error = serde_json::Error;
    type Variant = Content<'de>;

    fn variant_seed<V: serde::de::DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> std::result::Result<(V::Value, Self::Variant), Self::Error> {
        let name = serde::de::value::BorrowedStrDeserializer::<serde_json::Error>::new(self.name);
        Ok((seed.deserialize(name)?, Content(self.payload)))
    }
}

/// The content of one variant: the stored payload's JSON text, parsed as the variant asks.
struct Content<'a>(&'a str);

impl<'de> Content<'de> {
    /// Runs `read` on a parser over the whole text and checks nothing but whitespace follows.
    fn parse<T>(
        self,
        read: impl FnOnce(
            &mut serde_json::Deserializer<serde_json::de::StrRead<'de>>,
        ) -> std::result::Result<T, serde_json::Error>,
    ) -> std::result::Result<T, serde_json::Error> {
        let mut parser = serde_json::Deserializer::from_str(self.0);
        let value = read(&mut parser)?;
        parser.end()?;
        Ok(value)
    }
}

impl<'de> serde::de::VariantAccess<'de> for Content<'de> {
    type Error = serde_json::Error;

    fn unit_variant(self) -> std::result::Result<(), Self::Error> {
        match serde_json::from_str::<Value>(self.0)? {
            Value::Null => Ok(()),
            Value::Object(fields) if fields.is_empty() => Ok(()),
            other => Err(serde::de::Error::invalid_type(
                serde::de::Unexpected::Other(&other.to_string()),
                &"no payload (null) for an event without fields",
            )),
        }
    }

    fn newtype_variant_seed<T: serde::de::DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> std::result::Result<T::Value, Self::Error> {
        self.parse(|parser| seed.deserialize(parser))
    }

    fn tuple_variant<V: serde::de::Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        self.parse(|parser| serde::Deserializer::deserialize_seq(parser, visitor))
    }

    fn struct_variant<V: serde::de::Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        self.parse(|parser| serde::Deserializer::deserialize_struct(parser, "", fields, visitor))
    }
}

fn encode_shape_error<E>() -> Error {
    Error::Encode {
        reason: format!(
            "{} must serialize as an externally tagged enum (serde's default), so each variant has a persisted name",
            std::any::type_name::<E>()
        ),
    }
}

/// Metadata recorded with every event: where it came from and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Ties together every event and message of one business transaction (for example one HTTP request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The id of the command or event that directly caused this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// Free-form key/values (user id, tenant, client version, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Value>,
    /// The [`CommandId`](crate::CommandId) the event was appended under, when its command ran under one; last, so
    /// that stored metadata that is not an object still fails to decode (see
    /// [`Repository::execute_once`](crate::Repository::execute_once)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
}

impl Metadata {
    /// Metadata with the given correlation id.
    pub fn correlated(correlation_id: impl Into<String>) -> Self {
        Self {
            correlation_id: Some(correlation_id.into()),
            ..Self::default()
        }
    }

    /// Metadata for something caused by `event`: same correlation id (or the event's id when it had none),
    /// and the event's id as causation id.
    pub fn caused_by(event: &RecordedEvent) -> Self {
        Self {
            correlation_id: Some(
                event
                    .metadata
                    .correlation_id
                    .clone()
                    .unwrap_or_else(|| event.event_id.to_string()),
            ),
            causation_id: Some(event.event_id.to_string()),
            extra: BTreeMap::new(),
            command_id: None,
        }
    }

    /// Sets the causation id.
    pub fn with_causation_id(mut self, causation_id: impl Into<String>) -> Self {
        self.causation_id = Some(causation_id.into());
        self
    }

    /// Adds one free-form key/value.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }
}

/// An event ready to be appended: the store assigns its stream version, position and timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Unique id; appending the same id again at the same expected version is a no-op (idempotent append).
    pub event_id: EventId,
    /// Persisted event name, for example `"MoneyDeposited"`.
    pub event_type: String,
    /// Schema version of `payload`.
    pub schema_version: u32,
    /// The event's data.
    pub payload: Value,
    /// Correlation, causation and free-form metadata.
    pub metadata: Metadata,
}

impl NewEvent {
    /// A new event with a fresh id, schema version 1 and empty metadata.
    pub fn new(event_type: impl Into<String>, payload: Value) -> Self {
        Self {
            event_id: EventId::new(),
            event_type: event_type.into(),
            schema_version: 1,
            payload,
            metadata: Metadata::default(),
        }
    }

    /// Encodes a domain event (see [`Event::encode`]) with a fresh id.
    ///
    /// # Errors
    /// [`Error::Encode`] when the event cannot be serialized.
    pub fn from_event<E: Event>(event: &E) -> Result<Self> {
        let (event_type, payload) = event.encode()?;
        Ok(Self {
            event_id: EventId::new(),
            event_type,
            schema_version: event.schema_version(),
            payload,
            metadata: Metadata::default(),
        })
    }

    /// Replaces the event id.
    pub fn with_id(mut self, event_id: EventId) -> Self {
        self.event_id = event_id;
        self
    }

    /// Replaces the metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Replaces the schema version.
    pub fn with_schema_version(mut self, schema_version: u32) -> Self {
        self.schema_version = schema_version;
        self
    }
}

/// An event as the store recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Unique id across the store.
    pub event_id: EventId,
    /// The stream it belongs to.
    pub stream_id: StreamId,
    /// 1-based, gapless version within its stream.
    pub stream_version: StreamVersion,
    /// Store-wide position; grows with every append, may have gaps.
    pub position: Position,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
    /// Persisted event name.
    pub event_type: String,
    /// Schema version of `payload`.
    pub schema_version: u32,
    /// The event's data, as stored: parsed only when decoded.
    pub payload: Payload,
    /// Correlation, causation and free-form metadata.
    pub metadata: Metadata,
}

impl RecordedEvent {
    /// Decodes the payload into a domain event.
    ///
    /// # Errors
    /// [`Error::Decode`] naming the stream, version, position and event type when [`Event::upcast`] refuses the
    /// payload, the payload does not fit `E`, or `E` has no variant of this name.
    pub fn decode<E: Event>(&self) -> Result<E> {
        let upcast = E::upcast(&self.event_type, self.schema_version, &self.payload)
            .map_err(|reason| self.decode_error(format!("upcasting failed: {reason}")))?;
        let decoded = match upcast {
            None => E::decode(&self.event_type, &self.payload),
            Some((event_type, payload)) => E::decode(&event_type, &Payload::from(payload)),
        };
        decoded.map_err(|source| self.decode_error(source))
    }

    /// Builds the [`Error::Decode`] for this event with the given cause.
    pub fn decode_error(
        &self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error::Decode {
            stream: self.stream_id.clone(),
            version: self.stream_version,
            position: self.position,
            event_type: self.event_type.clone(),
            schema_version: self.schema_version,
            source: source.into(),
        }
    }
}
