//! A stored event's row and the [`RecordedEvent`] it decodes to, with the checks and errors every read shares.

use annals::{EventId, Metadata, Payload, Position, RecordedEvent, StreamId, StreamVersion};
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

/// How much of each event a read selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Columns {
    /// Every stored field.
    Whole,
    /// What a fold reads ([`EventStore::fold_all`](annals::EventStore::fold_all)): no event id (left at
    /// [`EventId::NIL`]), `recorded_at` (left at [`DateTime::MIN_UTC`]) or metadata (left empty).
    Lean,
}

impl Columns {
    /// The select list: the lean columns first, in the order [`decode`] reads them, then the rest.
    pub(crate) fn list(self) -> &'static str {
        match self {
            Self::Whole => {
                "position, stream_id, stream_version, event_type, schema_version, payload, \
                 event_id, recorded_at, metadata"
            }
            Self::Lean => {
                "position, stream_id, stream_version, event_type, schema_version, payload"
            }
        }
    }
}

/// Microseconds since the Unix epoch, as `recorded_at` stores a time.
pub(crate) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// The time `recorded_at` stores as `micros`, if it is one chrono can hold.
pub(crate) fn from_micros(micros: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
}

/// Decodes `row`, selected with `columns` ([`Columns::list`]). `stream`, when the read was of one stream, is
/// used instead of the row's copy. A row that cannot be an event (a negative position, an impossible schema
/// version, a malformed id, time or metadata) is an error naming the event, never a panic.
pub(crate) fn decode(
    row: &SqliteRow,
    columns: Columns,
    stream: Option<&StreamId>,
) -> annals::Result<RecordedEvent> {
    let corrupt = |what: String| annals::Error::Backend {
        operation: "read",
        source: what.into(),
    };
    let position: i64 = row
        .try_get(0)
        .map_err(|e| corrupt(format!("unreadable position: {e}")))?;
    let refused = |what: &str, e: &dyn std::fmt::Display| {
        corrupt(format!("stored event at position {position}: {what}: {e}"))
    };
    let stream_id = match stream {
        Some(stream) => stream.clone(),
        None => {
            let raw: &str = row
                .try_get(1)
                .map_err(|e| refused("unreadable stream id", &e))?;
            StreamId::new(raw).map_err(|e| refused("invalid stream id", &e))?
        }
    };
    let version: i64 = row
        .try_get(2)
        .map_err(|e| refused("unreadable stream version", &e))?;
    let event_type: String = row
        .try_get(3)
        .map_err(|e| refused("unreadable event type", &e))?;
    let schema_version: i64 = row
        .try_get(4)
        .map_err(|e| refused("unreadable schema version", &e))?;
    let payload: &str = row
        .try_get(5)
        .map_err(|e| refused("unreadable payload", &e))?;
    // The envelope so far, to name the event in an error; an impossible number is refused just below, so the
    // placeholder 0s are never handed out as data.
    let mut event = RecordedEvent {
        event_id: EventId::NIL,
        stream_id,
        stream_version: StreamVersion(u64::try_from(version).unwrap_or(0)),
        position: Position(u64::try_from(position).unwrap_or(0)),
        recorded_at: DateTime::<Utc>::MIN_UTC,
        event_type,
        schema_version: u32::try_from(schema_version).unwrap_or(0),
        payload: Payload::from_stored_json(payload),
        metadata: Metadata::default(),
    };
    if position <= 0 || version <= 0 || u32::try_from(schema_version).is_err() {
        return Err(event.decode_error(format!(
            "impossible envelope: position {position}, stream version {version}, schema version {schema_version}"
        )));
    }
    if columns == Columns::Whole {
        whole(row, &mut event)?;
    }
    Ok(event)
}

/// Fills in the event id, `recorded_at` and metadata of `event` from a [`Columns::Whole`] row.
fn whole(row: &SqliteRow, event: &mut RecordedEvent) -> annals::Result<()> {
    let id: &[u8] = row.try_get(6).map_err(|e| event.decode_error(e))?;
    let id = uuid::Uuid::from_slice(id)
        .map_err(|e| event.decode_error(format!("malformed event id: {e}")))?;
    event.event_id = EventId(id);
    let at: i64 = row.try_get(7).map_err(|e| event.decode_error(e))?;
    event.recorded_at = from_micros(at)
        .ok_or_else(|| event.decode_error(format!("recorded_at {at} is out of range")))?;
    let metadata: Option<&str> = row.try_get(8).map_err(|e| event.decode_error(e))?;
    if let Some(metadata) = metadata {
        event.metadata = serde_json::from_str(metadata)
            .map_err(|e| event.decode_error(format!("malformed metadata: {e}")))?;
    }
    Ok(())
}
