//! [`EventJson`]: a stored event as an HTTP API shows it (an audit or event-stream endpoint).

use annals::RecordedEvent;
use serde::ser::{Serialize, SerializeStruct, Serializer};

/// A recorded event as JSON: `{"event_id", "type", "schema_version", "version", "position", "recorded_at",
/// "payload", "metadata"}`, the payload as stored (not re-encoded). The stream is left out: an endpoint serves
/// one stream's events.
///
/// ```
/// use annals::{EventId, Metadata, Position, RecordedEvent, StreamId, StreamVersion};
/// use annals_axum::EventJson;
///
/// let stored = RecordedEvent {
///     event_id: EventId::new(), stream_id: StreamId::new("account-1").unwrap(), stream_version: StreamVersion(1),
///     position: Position(7), recorded_at: "2026-12-02T06:00:00Z".parse().unwrap(), event_type: "MoneyDeposited".into(),
///     schema_version: 1, payload: serde_json::json!({"amount": 5}).into(), metadata: Metadata::correlated("c-1"),
/// };
/// let json = serde_json::to_value(EventJson::from(stored)).unwrap();
/// assert_eq!(json["type"], "MoneyDeposited");
/// assert_eq!((json["version"].as_u64(), json["position"].as_u64()), (Some(1), Some(7)));
/// assert_eq!(json["payload"]["amount"], 5);
/// assert_eq!(json["metadata"]["correlation_id"], "c-1");
/// assert_eq!(json["recorded_at"], "2026-12-02T06:00:00Z");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct EventJson(pub RecordedEvent);

impl From<RecordedEvent> for EventJson {
    fn from(event: RecordedEvent) -> Self {
        Self(event)
    }
}

impl Serialize for EventJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let event = &self.0;
        let mut json = serializer.serialize_struct("EventJson", 8)?;
        json.serialize_field("event_id", &event.event_id)?;
        json.serialize_field("type", &event.event_type)?;
        json.serialize_field("schema_version", &event.schema_version)?;
        json.serialize_field("version", &event.stream_version)?;
        json.serialize_field("position", &event.position)?;
        json.serialize_field("recorded_at", &event.recorded_at)?;
        json.serialize_field("payload", &event.payload)?;
        json.serialize_field("metadata", &event.metadata)?;
        json.end()
    }
}
