//! The headers every published event carries, and reading them back on the consumer side.

use annals::{EventId, Position, StreamId, StreamVersion};
use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use chrono::{DateTime, SecondsFormat, Utc};

/// `Nats-Msg-Id`: the event id, so JetStream drops re-publishes inside its duplicate window.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// The event's id (UUID).
pub const EVENT_ID: &str = "Annals-Event-Id";
/// The event's persisted type name.
pub const EVENT_TYPE: &str = "Annals-Event-Type";
/// The event's schema version.
pub const SCHEMA_VERSION: &str = "Annals-Schema-Version";
/// The event's stream id (percent-encoded, see [`encode_value`]).
pub const STREAM_ID: &str = "Annals-Stream-Id";
/// The event's version in its stream (1-based).
pub const STREAM_VERSION: &str = "Annals-Stream-Version";
/// The event's global position in the event log.
pub const POSITION: &str = "Annals-Position";
/// When the event was recorded (RFC 3339, UTC, microseconds).
pub const RECORDED_AT: &str = "Annals-Recorded-At";
/// The correlation id, when the event has one (percent-encoded).
pub const CORRELATION_ID: &str = "Annals-Correlation-Id";
/// The causation id, when the event has one (percent-encoded).
pub const CAUSATION_ID: &str = "Annals-Causation-Id";

/// The headers of `event`'s message.
///
/// Names are built from static strings and values are moved in as owned strings, so a header costs one
/// allocation (its value) and no validation of a name: this runs once per published event.
pub(crate) fn headers_of(event: &annals::RecordedEvent) -> HeaderMap {
    let mut h = HeaderMap::new();
    let id = event.event_id.to_string();
    let mut put = |name: &'static str, value: String| {
        h.insert(HeaderName::from_static(name), HeaderValue::from(value));
    };
    put(MSG_ID, id.clone());
    put(EVENT_ID, id);
    put(EVENT_TYPE, encode_value(&event.event_type));
    put(SCHEMA_VERSION, event.schema_version.to_string());
    put(STREAM_ID, encode_value(event.stream_id.as_str()));
    put(STREAM_VERSION, event.stream_version.0.to_string());
    put(POSITION, event.position.get().to_string());
    put(
        RECORDED_AT,
        event
            .recorded_at
            .to_rfc3339_opts(SecondsFormat::Micros, true),
    );
    if let Some(c) = &event.metadata.correlation_id {
        put(CORRELATION_ID, encode_value(c));
    }
    if let Some(c) = &event.metadata.causation_id {
        put(CAUSATION_ID, encode_value(c));
    }
    h
}

/// Percent-encodes `%`, spaces, control characters and non-ASCII bytes, so any string is a safe header value
/// (no line breaks, no trimmed whitespace). Reversed by [`decode_value`].
pub fn encode_value(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b == b'%' || b <= b' ' || b >= 0x7f {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// Reverses [`encode_value`]; `None` when `value` is not well-formed.
pub fn decode_value(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(value.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The envelope of an event received from the feed, read from its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedHeaders {
    /// The event's id.
    pub event_id: EventId,
    /// Its persisted type name.
    pub event_type: String,
    /// Its schema version.
    pub schema_version: u32,
    /// Its stream.
    pub stream_id: StreamId,
    /// Its version in the stream.
    pub stream_version: StreamVersion,
    /// Its global position in the producer's event log.
    pub position: Position,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Its correlation id.
    pub correlation_id: Option<String>,
    /// Its causation id.
    pub causation_id: Option<String>,
}

impl FeedHeaders {
    /// Reads the envelope from a message's headers.
    ///
    /// # Errors
    /// A sentence naming the header that is missing or malformed (the inbox parks the message with it).
    pub fn parse(headers: Option<&HeaderMap>) -> std::result::Result<Self, String> {
        let headers = headers.ok_or_else(|| "the message has no headers".to_owned())?;
        let get = |name: &str| -> std::result::Result<&str, String> {
            headers
                .get(name)
                .map(|v| v.as_str())
                .ok_or_else(|| format!("header {name} is missing"))
        };
        let decoded = |name: &str| -> std::result::Result<String, String> {
            decode_value(get(name)?)
                .ok_or_else(|| format!("header {name} is not percent-encoded UTF-8"))
        };
        fn bad(name: &str, value: &str, e: impl std::fmt::Display) -> String {
            format!("header {name} has a bad value {value:?}: {e}")
        }
        let id = get(EVENT_ID)?;
        let event_id = uuid::Uuid::parse_str(id)
            .map(EventId)
            .map_err(|e| bad(EVENT_ID, id, e))?;
        let version = get(SCHEMA_VERSION)?;
        let schema_version = version
            .parse()
            .map_err(|e| bad(SCHEMA_VERSION, version, e))?;
        let stream = decoded(STREAM_ID)?;
        let stream_id = StreamId::new(stream.clone()).map_err(|e| bad(STREAM_ID, &stream, e))?;
        let sv = get(STREAM_VERSION)?;
        let stream_version = sv
            .parse::<u64>()
            .map_err(|e| bad(STREAM_VERSION, sv, e))
            .and_then(|v| {
                if v == 0 {
                    Err(bad(STREAM_VERSION, sv, "stream versions start at 1"))
                } else {
                    Ok(StreamVersion(v))
                }
            })?;
        let pos = get(POSITION)?;
        let position = pos
            .parse::<u64>()
            .map(Position)
            .map_err(|e| bad(POSITION, pos, e))?;
        let at = get(RECORDED_AT)?;
        let recorded_at = DateTime::parse_from_rfc3339(at)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| bad(RECORDED_AT, at, e))?;
        let optional = |name: &str| -> std::result::Result<Option<String>, String> {
            match headers.get(name) {
                None => Ok(None),
                Some(_) => decoded(name).map(Some),
            }
        };
        Ok(Self {
            event_id,
            event_type: decoded(EVENT_TYPE)?,
            schema_version,
            stream_id,
            stream_version,
            position,
            recorded_at,
            correlation_id: optional(CORRELATION_ID)?,
            causation_id: optional(CAUSATION_ID)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_round_trip_and_stay_on_one_line() {
        for raw in ["plain", "a b", "line\r\nbreak", "100%", "ünï", " lead"] {
            let v = encode_value(raw);
            assert!(!v.contains([' ', '\r', '\n']) && v.is_ascii(), "{v}");
            assert_eq!(decode_value(&v).as_deref(), Some(raw));
        }
        assert_eq!(decode_value("%G1"), None);
    }

    #[test]
    fn missing_and_bad_headers_are_named() {
        assert_eq!(
            FeedHeaders::parse(None).unwrap_err(),
            "the message has no headers"
        );
        let mut h = HeaderMap::new();
        h.insert(EVENT_ID, "not-a-uuid");
        let err = FeedHeaders::parse(Some(&h)).unwrap_err();
        assert!(
            err.contains(EVENT_ID) && err.contains("not-a-uuid"),
            "{err}"
        );
        h.insert(EVENT_ID, uuid::Uuid::now_v7().to_string().as_str());
        let err = FeedHeaders::parse(Some(&h)).unwrap_err();
        assert_eq!(err, format!("header {SCHEMA_VERSION} is missing"));
    }
}
